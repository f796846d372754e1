"""Message-passing layer that updates edge and node features, in both edge directions."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MLP, MessagePassing


class EdgeNodeConv(MessagePassing):
    r"""One metanetwork layer over a network graph (edges ``i -> j`` point from input to output).

    .. math::

        e'_{ij} &= e_{ij} + W_2\,\sigma\big(W_e e_{ij} + W_s h_i + W_t h_j + b\big) \\
        m^{\rightarrow}_j &= \operatorname{AGG}_{i:\, i \to j}\ \sigma\big(U_{\rightarrow} e'_{ij} + V_{\rightarrow} h_i\big)
            \qquad\text{(from the layer below, forward edges)} \\
        m^{\leftarrow}_i &= \operatorname{AGG}_{j:\, i \to j}\ \sigma\big(U_{\leftarrow} e'_{ij} + V_{\leftarrow} h_j\big)
            \qquad\text{(from the layer above, reversed edges)} \\
        h'_j &= h_j + \phi_h\big([h_j, m^{\rightarrow}_j, m^{\leftarrow}_j]\big)

    The edge update is an MLP on :math:`[e_{ij}, h_i, h_j]` whose first linear map is split by
    input block, so the node terms :math:`W_s h, W_t h` are computed once per node and gathered
    (networks have far more edges than nodes). All maps are shared by all nodes/edges and AGG is
    symmetric, so the layer is equivariant to any permutation of the nodes, in particular of the
    hidden neurons of the encoded network. AGG defaults to the mean, which keeps message scales
    comparable between narrow and wide layers.
    """

    def __init__(self, hidden: int, aggregation: str = "mean") -> None:
        super().__init__(aggr=aggregation)
        self.edge_input = nn.Linear(hidden, hidden)
        self.source_input = nn.Linear(hidden, hidden, bias=False)
        self.target_input = nn.Linear(hidden, hidden, bias=False)
        self.edge_output = nn.Linear(hidden, hidden)
        self.edge_message = nn.Linear(hidden, 2 * hidden)  # [U_forward; U_backward]
        self.node_message = nn.Linear(hidden, 2 * hidden, bias=False)  # [V_forward; V_backward]
        self.node_mlp = MLP([3 * hidden, hidden, hidden], act="silu", norm=None)
        self.activation = nn.SiLU()

    def reset_parameters(self) -> None:
        """Re-initialise every linear map."""
        for module in (self.edge_input, self.source_input, self.target_input, self.edge_output,
                       self.edge_message, self.node_message, self.node_mlp):
            module.reset_parameters()

    def forward(self, node_features: torch.Tensor, edge_index: torch.Tensor,
                edge_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated ``(node_features [N, hidden], edge_features [E, hidden])``."""
        edge_features = edge_features + self.edge_updater(
            edge_index, source_term=self.source_input(node_features),
            target_term=self.target_input(node_features), e=edge_features)
        forward_edge, backward_edge = self.edge_message(edge_features).chunk(2, dim=-1)
        forward_node, backward_node = self.node_message(node_features).chunk(2, dim=-1)
        size = (node_features.shape[0], node_features.shape[0])
        from_below = self.propagate(edge_index, neighbour=forward_node, edge_term=forward_edge, size=size)
        from_above = self.propagate(edge_index.flip(0), neighbour=backward_node, edge_term=backward_edge, size=size)
        update = self.node_mlp(torch.cat([node_features, from_below, from_above], dim=-1))
        return node_features + update, edge_features

    def edge_update(self, source_term_j: torch.Tensor, target_term_i: torch.Tensor,
                    e: torch.Tensor) -> torch.Tensor:
        """:math:`W_2\\sigma(W_e e_{ij} + W_s h_i + W_t h_j + b)` (``_j`` indexes the source)."""
        return self.edge_output(self.activation(self.edge_input(e) + source_term_j + target_term_i))

    def message(self, neighbour_j: torch.Tensor, edge_term: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(U e' + V h_{neighbour})` in the direction being propagated."""
        return self.activation(edge_term + neighbour_j)
