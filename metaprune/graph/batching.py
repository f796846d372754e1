"""Batching network graphs of different architectures.

``Batch.from_data_list`` needs every ``edge_attr`` to have the same width, so graphs whose
largest kernels differ (1x1 vs 5x5) are zero-padded (mask ``False``) to a common width first.
Per-graph indices (``channel_group``, ``edge_layer``, ...) are not offset by batching: decode or
prune one graph at a time with ``batch.get_example(i)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from metaprune.errors import GraphError


def pad_edge_features(graph: Data, width: int) -> Data:
    """Copy of ``graph`` whose ``edge_attr``/``edge_mask`` are zero/False-padded to ``width`` columns."""
    current = graph.edge_attr.shape[1]
    if width < current:
        raise GraphError(f"cannot pad edge features of width {current} down to {width}")
    padded = graph.clone()
    padded.edge_attr = F.pad(graph.edge_attr, (0, width - current))
    padded.edge_mask = F.pad(graph.edge_mask, (0, width - current), value=False)
    return padded


def collate_graphs(graphs: Sequence[Data], edge_feature_size: int | None = None) -> Batch:
    """One ``Batch`` of network graphs, padded to ``edge_feature_size`` (default: the widest)."""
    if not graphs:
        raise GraphError("collate_graphs needs at least one graph")
    width = max(graph.edge_attr.shape[1] for graph in graphs) if edge_feature_size is None else edge_feature_size
    return Batch.from_data_list([pad_edge_features(graph, width) for graph in graphs])
