"""Rewriting a network with a metanetwork: network -> graph -> metanetwork -> weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from metaprune.graph import graph_to_network, graph_to_parameters, network_to_graph
from metaprune.meta.metanetwork import MetaNetwork


def rewrite_parameters(metanet: MetaNetwork, model: nn.Module, example_input: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rewritten parameters (and BN statistics) of ``model``, differentiable w.r.t. ``metanet``.

    Evaluate the rewritten network with
    ``torch.func.functional_call(model, rewrite_parameters(metanet, model, x), (x,))``; a loss on
    that output back-propagates into the metanetwork (this is what meta-training optimises).
    """
    return graph_to_parameters(metanet(network_to_graph(model, example_input)), model)


def rewrite_network(metanet: MetaNetwork, model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Deep copy of ``model`` carrying the metanetwork's rewritten weights (``model`` is untouched)."""
    with torch.no_grad():
        rewritten_graph = metanet(network_to_graph(model, example_input))
    rewritten = copy.deepcopy(model)
    graph_to_network(rewritten_graph, rewritten)
    return rewritten
