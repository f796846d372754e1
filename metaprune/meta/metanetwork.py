"""The graph metanetwork: reads a network graph and proposes rewritten weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import MLP

from metaprune.errors import ConfigError, GraphError
from metaprune.graph.layout import NODE_FEATURES, REWRITABLE_NODE_FEATURES, EdgeType, NodeType
from metaprune.meta.edge_node_conv import EdgeNodeConv

_REQUIRED = ("x", "node_mask", "node_type", "node_position", "edge_index", "edge_attr", "edge_mask", "edge_type")


class MetaNetwork(nn.Module):
    r"""GNN metanetwork producing a rewritten network graph.

    Node features :math:`x` (bias, BatchNorm parameters) and edge features :math:`w` (kernels)
    are encoded together with their validity masks, node/edge types and the channel positions of
    input/output nodes; ``layers`` :class:`EdgeNodeConv` layers follow; decoders give
    :math:`\Delta_x, \Delta_w` and

    .. math:: x' = x + \epsilon\,\Delta_x \odot m_x, \qquad w' = w + \epsilon\,\Delta_w \odot m_w

    with masked-out entries left exactly as they were; BatchNorm running statistics are read
    but never rewritten (:data:`~metaprune.graph.layout.REWRITABLE_NODE_FEATURES`). The
    decoders' last layers start at
    ``decoder_init_scale`` times their default initialisation, so :math:`w' \approx w` at
    initialisation while gradients still reach every parameter; ``epsilon=0`` is an exact identity.

    Args:
        hidden: width of node and edge embeddings.
        layers: number of message-passing layers.
        epsilon: step size of the rewrite.
        edge_feature_size: edge feature width the encoder accepts (narrower graphs are padded;
            9 covers 3x3 kernels).
        max_positions: input/output channel positions with their own embedding (larger ones share
            the last).
        aggregation: message aggregation of the layers (``"mean"``, ``"sum"``, ``"max"``).
        decoder_init_scale: scale of the decoders' initial last-layer weights.
    """

    def __init__(self, hidden: int = 64, layers: int = 4, epsilon: float = 0.1, edge_feature_size: int = 9,
                 max_positions: int = 512, aggregation: str = "mean", decoder_init_scale: float = 1e-3) -> None:
        super().__init__()
        for name, value in (("hidden", hidden), ("layers", layers), ("edge_feature_size", edge_feature_size),
                            ("max_positions", max_positions)):
            if not isinstance(value, int) or value < (0 if name == "layers" else 1):
                raise ConfigError(f"MetaNetwork {name} must be a positive integer, got {value!r}")
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ConfigError(f"MetaNetwork epsilon must be a finite number >= 0, got {epsilon}")
        self.epsilon = epsilon
        self.edge_feature_size = edge_feature_size
        self.max_positions = max_positions
        self.decoder_init_scale = decoder_init_scale
        node_width = len(NODE_FEATURES)
        self.node_encoder = MLP([2 * node_width, hidden, hidden], act="silu", norm=None)
        self.edge_encoder = MLP([2 * edge_feature_size, hidden, hidden], act="silu", norm=None)
        self.node_type_embedding = nn.Embedding(len(NodeType), hidden)
        self.edge_type_embedding = nn.Embedding(len(EdgeType), hidden)
        self.position_embedding = nn.Embedding(max_positions + 1, hidden)  # row 0: hidden nodes
        self.layers = nn.ModuleList(EdgeNodeConv(hidden, aggregation) for _ in range(layers))
        self.node_decoder = MLP([hidden, hidden, node_width], act="silu", norm=None)
        self.edge_decoder = MLP([hidden, hidden, edge_feature_size], act="silu", norm=None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default initialisation, with the decoders' last layers shrunk so that Δ starts small."""
        for module in (self.node_encoder, self.edge_encoder, self.node_type_embedding, self.edge_type_embedding,
                       self.position_embedding, *self.layers, self.node_decoder, self.edge_decoder):
            module.reset_parameters()
        with torch.no_grad():
            for decoder in (self.node_decoder, self.edge_decoder):
                decoder.lins[-1].weight.mul_(self.decoder_init_scale)
                decoder.lins[-1].bias.zero_()

    def forward(self, graph: Data) -> Data:
        """Rewritten copy of ``graph`` (or of a ``Batch``): new ``x`` and ``edge_attr``, rest shared."""
        self._check(graph)
        graph_width = graph.edge_attr.shape[1]
        padding = self.edge_feature_size - graph_width
        edge_weights = nn.functional.pad(graph.edge_attr, (0, padding))
        edge_mask = nn.functional.pad(graph.edge_mask, (0, padding), value=False)
        node_embedding = self._encode(self.node_encoder, graph.x, graph.node_mask) + self.node_type_embedding(
            graph.node_type) + self.position_embedding((graph.node_position + 1).clamp(max=self.max_positions))
        edge_embedding = self._encode(self.edge_encoder, edge_weights, edge_mask) + self.edge_type_embedding(
            graph.edge_type)
        for layer in self.layers:
            node_embedding, edge_embedding = layer(node_embedding, graph.edge_index, edge_embedding)
        node_delta = self.node_decoder(node_embedding)
        edge_delta = self.edge_decoder(edge_embedding)[:, :graph_width]
        rewritten = copy.copy(graph)
        rewritable = graph.node_mask & torch.tensor(REWRITABLE_NODE_FEATURES, device=graph.x.device)
        rewritten.x = torch.where(rewritable, graph.x + self.epsilon * node_delta, graph.x)
        rewritten.edge_attr = torch.where(graph.edge_mask, graph.edge_attr + self.epsilon * edge_delta,
                                          graph.edge_attr)
        return rewritten

    @staticmethod
    def _encode(encoder: MLP, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder input: the valid values (zero elsewhere) followed by the mask itself."""
        present = mask.to(values.dtype)
        return encoder(torch.cat([torch.where(mask, values, torch.zeros_like(values)), present], dim=-1))

    def _check(self, graph: Data) -> None:
        if not isinstance(graph, Data) or any(key not in graph for key in _REQUIRED):
            raise GraphError(f"MetaNetwork expects a graph from metaprune.graph.network_to_graph with {_REQUIRED}")
        if graph.edge_attr.shape[1] > self.edge_feature_size:
            raise GraphError(
                f"graph edge features have {graph.edge_attr.shape[1]} entries but this MetaNetwork accepts "
                f"at most edge_feature_size={self.edge_feature_size}: build it with a larger edge_feature_size")
