"""Prunable channel groups: the sets of channels that must be removed together.

Two channels are coupled when a residual add sums them (channel ``c`` of both operands and of
the sum) or when a depthwise conv maps input channel ``c`` to output channel ``c``. A group is a
connected component of the coupling graph. Groups that touch an input or output channel are
not prunable and get id ``-1``; the others are numbered ``0, 1, ...`` in order of their first node.

This is the node-level view of the coupling that :class:`metaprune.prune.groups.ModelGroups`
finds with torch-pruning at the layer level: channel ``c`` of every layer in one of its groups
carries one ``channel_group`` id here (checked in ``tests/graph/test_graph_groups.py``).
"""

from __future__ import annotations

import torch

from metaprune.graph.layout import NodeType


def connected_components(num_nodes: int, pairs: torch.Tensor) -> torch.Tensor:
    """The smallest node id of each node's connected component in the undirected graph of ``pairs``.

    ``pairs`` is ``[2, P]`` node ids. Every node starts as its own label; each round gives every
    node the smallest label among itself and its neighbours and then jumps to its label's label,
    which stops when no label changes (min-label propagation with pointer jumping).
    """
    labels = torch.arange(num_nodes)
    if pairs.numel() == 0:
        return labels
    source = torch.cat([pairs[0], pairs[1]]).long()
    target = torch.cat([pairs[1], pairs[0]]).long()
    while True:
        updated = labels.scatter_reduce(0, target, labels[source], reduce="amin")
        updated = updated[updated]
        if torch.equal(updated, labels):
            return labels
        labels = updated


def channel_groups(node_type: torch.Tensor, coupled_pairs: torch.Tensor) -> torch.Tensor:
    """Group id of every node (``-1`` for input/output channels and anything coupled to them).

    ``node_type`` is ``[N]`` (:class:`~metaprune.graph.layout.NodeType`), ``coupled_pairs`` is
    ``[2, P]`` node ids that must be pruned together.
    """
    num_nodes = node_type.numel()
    component = connected_components(num_nodes, coupled_pairs)
    fixed = (node_type == int(NodeType.INPUT)) | (node_type == int(NodeType.OUTPUT))
    prunable = ~torch.isin(component, component[fixed])
    groups = torch.full((num_nodes,), -1, dtype=torch.long)
    groups[prunable] = torch.unique(component[prunable], return_inverse=True)[1]
    return groups
