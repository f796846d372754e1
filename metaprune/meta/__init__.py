"""Graph metanetworks that rewrite a network's weights so it prunes easily."""

from metaprune.meta.edge_node_conv import EdgeNodeConv
from metaprune.meta.metanetwork import MetaNetwork
from metaprune.meta.rewrite import rewrite_network, rewrite_parameters

__all__ = ["EdgeNodeConv", "MetaNetwork", "rewrite_network", "rewrite_parameters"]
