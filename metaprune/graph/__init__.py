"""Network <-> graph conversion for graph metanetworks (layout in :mod:`metaprune.graph.layout`)."""

from metaprune.graph.batching import collate_graphs, pad_edge_features
from metaprune.graph.decode import graph_to_network, graph_to_parameters
from metaprune.graph.encode import network_to_graph
from metaprune.graph.layout import NODE_FEATURES, EdgeType, NodeType

__all__ = [
    "NODE_FEATURES", "EdgeType", "NodeType", "collate_graphs", "graph_to_network", "graph_to_parameters",
    "network_to_graph", "pad_edge_features",
]
