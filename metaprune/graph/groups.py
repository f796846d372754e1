"""Prunable channel groups: the sets of channels that must be removed together.

Two channels are coupled when a residual add sums them (channel ``c`` of both operands and of
the sum) or when a depthwise conv maps input channel ``c`` to output channel ``c``. A group is a
connected component of the coupling graph. Groups that touch an input or output channel are
not prunable and get id ``-1``; the others are numbered ``0, 1, ...`` in order of their first node.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from metaprune.graph.layout import NodeType


def channel_groups(node_type: torch.Tensor, coupled_pairs: torch.Tensor) -> torch.Tensor:
    """Group id of every node (``-1`` for input/output channels and anything coupled to them).

    ``node_type`` is ``[N]`` (:class:`~metaprune.graph.layout.NodeType`), ``coupled_pairs`` is
    ``[2, P]`` node ids that must be pruned together.
    """
    num_nodes = node_type.numel()
    pairs = coupled_pairs.numpy()
    adjacency = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(num_nodes, num_nodes))
    _, component = connected_components(adjacency, directed=False)
    component = torch.from_numpy(component).long()
    fixed = (node_type == int(NodeType.INPUT)) | (node_type == int(NodeType.OUTPUT))
    prunable = ~torch.isin(component, component[fixed])
    groups = torch.full((num_nodes,), -1, dtype=torch.long)
    groups[prunable] = torch.unique(component[prunable], return_inverse=True)[1]
    return groups
