"""The layout of a network graph: node/edge type ids and feature columns.

A network graph (a torch-geometric ``Data``) has one node per neuron or channel and one edge
per weight slice:

==================  ===========  =====================================================
attribute           shape        meaning
==================  ===========  =====================================================
``x``               ``[N, 5]``   node features, columns :data:`NODE_FEATURES`
``node_mask``       ``[N, 5]``   which node features exist (e.g. no bias, no BN)
``node_type``       ``[N]``      :class:`NodeType`
``node_position``   ``[N]``      channel index of input/output nodes, ``-1`` for hidden
``channel_group``   ``[N]``      prunable coupling set of a hidden node, ``-1`` otherwise
``node_bias_layer`` ``[N]``      index into ``layer_names`` of the layer whose bias the
                                 node holds, ``-1`` if none
``node_norm_layer`` ``[N]``      same for the BatchNorm whose parameters the node holds
``edge_index``      ``[2, E]``   source (input channel) -> target (output channel)
``edge_attr``       ``[E, K]``   flattened kernel (or spatial weights) zero-padded to ``K``
``edge_mask``       ``[E, K]``   which ``edge_attr`` entries are real weights
``edge_type``       ``[E]``      :class:`EdgeType`
``edge_layer``      ``[E]``      index into ``layer_names`` of the edge's layer, ``-1`` for
                                 residual edges
``layer_names``     list[str]    qualified names of the parametrised modules, in trace order
==================  ===========  =====================================================

Ordering contract (what makes decoding need nothing but the graph and the module): the
nodes a layer creates are consecutive and in channel order, and the edges of one layer
appear in row-major ``(out_channel, in_channel)`` order of its weight.
"""

from __future__ import annotations

from enum import IntEnum

NODE_FEATURES = ("bias", "norm_weight", "norm_bias", "norm_running_mean", "norm_running_var")
# Running statistics describe the data seen by the weights, not learnable weights: a metanetwork
# reads them but does not rewrite them (recalibrate BatchNorm after rewriting instead).
REWRITABLE_NODE_FEATURES = (True, True, True, False, False)
BIAS_COLUMN = 0
NORM_COLUMNS = slice(1, 5)


class NodeType(IntEnum):
    """Role of a node in the network."""

    INPUT = 0
    HIDDEN = 1
    RESIDUAL_SUM = 2
    OUTPUT = 3


class EdgeType(IntEnum):
    """Kind of connection an edge stands for."""

    CONV = 0
    LINEAR = 1
    RESIDUAL = 2
