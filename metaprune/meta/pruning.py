"""Meta-pruning a network: metanetwork rewrite, BatchNorm re-estimation, then group-L2 ranking.

``metaprune prune --criterion meta --metanet PATH`` goes through the ordinary pruning
pipeline; the only differences are that the dense copy is rewritten by the metanetwork (see
:func:`prepare_for_pruning`) before it is pruned and that channels are ranked by
:class:`MetaCriterion`, the group L2 norm of the rewritten weights that can change the output.

Why "that can change the output": a layer whose outputs feed a normalisation layer
(conv -> BatchNorm) is scale-invariant per channel, so the norm of its output rows says
nothing about the channel's importance and a metanetwork could shrink it for free. In groups
that contain a normalisation layer only the normalisation parameters and the consumers'
input columns are counted, both in :class:`MetaCriterion` (the ``output_group_l2`` criterion
applied after the rewrite) and in the meta-training penalty (:func:`output_sensitive_slices`),
so that what is trained is what is ranked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaprune.meta.metanetwork import MetaNetwork
from metaprune.meta.rewrite import rewrite_network
from metaprune.prune.criteria import GroupL2Criterion, OutputGroupL2Criterion, register_criterion
from metaprune.prune.groups import CHANNEL_NORMS, CONV_LINEAR, ParamRows
from metaprune.train import evaluate, recalibrate_batchnorm


class MetaCriterion(OutputGroupL2Criterion):
    """Output-sensitive group L2 norm of channels rewritten by a metanetwork (see the module docstring).

    With a ``metanet`` (a :class:`MetaNetwork`, or the path of a trained one), :meth:`prepare`
    rewrites the dense copy before it is scored; without one the criterion only ranks
    (meta-training validates this way on networks it has already rewritten).
    """

    name = "meta"

    def __init__(self, metanet: MetaNetwork | str | Path | None = None):
        self.metanet = metanet

    def prepare(self, model: nn.Module, example_input: torch.Tensor, loaders: tuple) -> tuple[nn.Module, dict[str, Any]]:
        """Rewrite ``model`` with the metanetwork and re-estimate BatchNorm; report the rewrite's cost and accuracy."""
        if self.metanet is None:
            return model, {}
        from metaprune.meta.training import load_metanet

        start = time.perf_counter()
        metanet = self.metanet if isinstance(self.metanet, MetaNetwork) else load_metanet(self.metanet)
        rewritten = prepare_for_pruning(metanet, model, example_input, loaders[0])
        extra = {"metanet": str(self.metanet) if not isinstance(self.metanet, MetaNetwork) else "in memory",
                 "rewrite_seconds": time.perf_counter() - start,
                 "rewritten_val_accuracy": evaluate(rewritten, loaders[1])}
        return rewritten, extra


@register_criterion("meta")
def meta_criterion(metanet: str) -> MetaCriterion:
    """``--criterion meta --metanet PATH``: a trained metanetwork (metanet.safetensors or its training dir)."""
    return MetaCriterion(metanet)


class MetaGroupL2Criterion(MetaCriterion):
    """The metanetwork's rewrite (as :class:`MetaCriterion`), channels ranked by the full group L2 norm.

    The full norm also counts the output rows of layers that feed a BatchNorm (as ``group_l2``
    does). On CIFAR-10 ResNet-20 with the prune-aware metanetwork it is the better ranking after
    fine-tuning at 2x and 8x fewer FLOPs and the worse one at 4x (README, "Meta-pruning on CIFAR-10").
    """

    name = "meta_group_l2"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return GroupL2Criterion.channel_scores(self, rows, size)


@register_criterion("meta_group_l2")
def meta_group_l2_criterion(metanet: str) -> MetaGroupL2Criterion:
    """``--criterion meta_group_l2 --metanet PATH``: the rewrite of ``meta``, ranked by the full group L2 norm."""
    return MetaGroupL2Criterion(metanet)


def output_sensitive_slices(model: nn.Module, coupled: list[tuple[str, int, torch.Tensor, torch.Tensor]]
                            ) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """The coupled parameter slices of one group (from ``ModelGroups.coupled_parameters``) minus
    the output rows of conv/linear layers when the group holds a normalisation layer."""
    def module_of(name: str) -> nn.Module:
        return model.get_submodule(name.rpartition(".")[0])

    if not any(isinstance(module_of(name), CHANNEL_NORMS) for name, *_ in coupled):
        return coupled
    return [piece for piece in coupled if not (piece[1] == 0 and isinstance(module_of(piece[0]), CONV_LINEAR))]


def prepare_for_pruning(metanet: MetaNetwork, model: nn.Module, example_input: torch.Tensor,
                        loader: Iterable) -> nn.Module:
    """A copy of ``model`` rewritten by ``metanet``, with BatchNorm statistics re-estimated on ``loader``.

    The metanetwork edits weights and BatchNorm affine parameters but not the running
    statistics, which no longer match the rewritten weights; a pass over training batches in
    train mode (no gradient) re-estimates them. ``model`` itself is untouched.
    """
    rewritten = rewrite_network(metanet, model, example_input)
    return recalibrate_batchnorm(rewritten, loader).eval()
