"""Accumulates nodes, edges and node features while a traced network is walked.

Everything is stored as whole-layer tensor chunks (one per layer, never one per weight), and
:meth:`GraphBuilder.finish` concatenates them once into a torch-geometric ``Data``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from metaprune.errors import GraphError
from metaprune.graph.groups import channel_groups
from metaprune.graph.layout import BIAS_COLUMN, NODE_FEATURES, EdgeType, NodeType


@dataclass(frozen=True)
class ChannelValue:
    """The graph nodes carried by one tensor of the traced network.

    ``channels`` consecutive nodes starting at ``first_node``; each channel covers
    ``spatial_size`` positions. ``flat`` tensors are ``[batch, channels * spatial_size]``
    (feature ``f`` belongs to channel ``f // spatial_size``), others ``[batch, channels, H, W]``.
    """

    first_node: int
    channels: int
    spatial_size: int
    flat: bool

    @property
    def nodes(self) -> torch.Tensor:
        """Node ids of the channels, in channel order."""
        return torch.arange(self.first_node, self.first_node + self.channels)


@dataclass(frozen=True)
class _EdgeChunk:
    source: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor  # [edges, entries per edge]
    edge_type: EdgeType
    layer: int


@dataclass(frozen=True)
class _FeatureWrite:
    value: ChannelValue
    columns: tuple[int, ...]
    features: torch.Tensor  # [channels, len(columns)]
    layer: int
    fx_node: str


class GraphBuilder:
    """Collects the graph of one network; see :mod:`metaprune.graph.layout` for the result."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.layer_names: list[str] = []
        self._node_types: list[torch.Tensor] = []
        self._node_count = 0
        self._edges: list[_EdgeChunk] = []
        self._feature_writes: list[_FeatureWrite] = []
        self._couplings: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._outputs: list[ChannelValue] = []

    def add_nodes(self, count: int, node_type: NodeType) -> int:
        """Append ``count`` nodes of one type; returns the id of the first."""
        first = self._node_count
        self._node_types.append(torch.full((count,), int(node_type), dtype=torch.long))
        self._node_count += count
        return first

    def register_layer(self, module_name: str, fx_node: str) -> int:
        """Give a parametrised module its layer index (a module may appear only once)."""
        if module_name in self.layer_names:
            raise GraphError(
                f"module '{module_name}' is called more than once (fx node '{fx_node}'); shared "
                "weights cannot be encoded as one set of edges: give each call its own module")
        self.layer_names.append(module_name)
        return len(self.layer_names) - 1

    def add_edges(self, source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                  edge_type: EdgeType, layer: int) -> None:
        """Append edges ``source[i] -> target[i]`` whose features are the rows of ``weights``."""
        self._edges.append(_EdgeChunk(source, target, weights.detach().to(self.dtype), edge_type, layer))

    def write_features(self, value: ChannelValue, columns: tuple[int, ...], features: torch.Tensor,
                       layer: int, fx_node: str) -> None:
        """Store ``features[c, k]`` as node feature ``columns[k]`` of channel ``c`` of ``value``."""
        self._feature_writes.append(
            _FeatureWrite(value, columns, features.detach().to(self.dtype), layer, fx_node))

    def add_residual_sum(self, operands: tuple[ChannelValue, ChannelValue]) -> ChannelValue:
        """New sum nodes, each fed by a residual edge from the same channel of both operands."""
        first, second = operands
        total = self.add_nodes(first.channels, NodeType.RESIDUAL_SUM)
        summed = ChannelValue(total, first.channels, first.spatial_size, first.flat)
        for operand in operands:
            self.add_edges(operand.nodes, summed.nodes, torch.zeros(first.channels, 0),
                           EdgeType.RESIDUAL, layer=-1)
        return summed

    def couple(self, first: ChannelValue, second: ChannelValue) -> None:
        """Mark channel ``c`` of ``first`` and of ``second`` as prunable only together."""
        self._couplings.append((first.nodes, second.nodes))

    def mark_output(self, value: ChannelValue) -> None:
        """Mark the channels of the network's output."""
        self._outputs.append(value)

    def finish(self, edge_feature_size: int | None) -> Data:
        """Concatenate everything into the network graph."""
        node_type = torch.cat(self._node_types)
        for output in self._outputs:
            node_type[output.nodes] = int(NodeType.OUTPUT)
        node_features = self._node_features(node_type.numel())
        edge_features = self._edge_features(edge_feature_size)
        coupled = [torch.stack(pair) for pair in self._couplings]
        coupled += [torch.stack([chunk.source, chunk.target]) for chunk in self._edges
                    if chunk.edge_type == EdgeType.RESIDUAL]
        return Data(
            **node_features, **edge_features,
            node_type=node_type,
            node_position=self._node_positions(node_type),
            channel_group=channel_groups(node_type, torch.cat(coupled, dim=1) if coupled
                                         else torch.zeros(2, 0, dtype=torch.long)),
            layer_names=list(self.layer_names),
        )

    def _node_positions(self, node_type: torch.Tensor) -> torch.Tensor:
        position = torch.full_like(node_type, -1)
        inputs = node_type == int(NodeType.INPUT)
        position[inputs] = torch.arange(int(inputs.sum()))
        for output in self._outputs:
            position[output.nodes] = torch.arange(output.channels)
        return position

    def _node_features(self, num_nodes: int) -> dict[str, torch.Tensor]:
        features = torch.zeros(num_nodes, len(NODE_FEATURES), dtype=self.dtype)
        mask = torch.zeros(num_nodes, len(NODE_FEATURES), dtype=torch.bool)
        bias_layer = torch.full((num_nodes,), -1, dtype=torch.long)
        norm_layer = torch.full((num_nodes,), -1, dtype=torch.long)
        for write in self._feature_writes:
            rows, columns = write.value.nodes, list(write.columns)
            taken = mask[rows][:, columns]
            if taken.any():
                name = NODE_FEATURES[columns[int(taken.any(dim=0).nonzero()[0])]]
                raise GraphError(
                    f"fx node '{write.fx_node}' sets '{name}' on channels that already have one from "
                    "an earlier layer (e.g. two BatchNorms or a bias after a bias in a row); such "
                    "parameters cannot be told apart in the graph: fold one into the other first")
            features[rows.unsqueeze(1), columns] = write.features
            mask[rows.unsqueeze(1), columns] = True
            target = bias_layer if columns == [BIAS_COLUMN] else norm_layer
            target[rows] = write.layer
        return {"x": features, "node_mask": mask, "node_bias_layer": bias_layer, "node_norm_layer": norm_layer}

    def _edge_features(self, edge_feature_size: int | None) -> dict[str, torch.Tensor]:
        if not self._edges:
            raise GraphError("the network has no Conv2d or Linear layer, so its graph has no edges")
        widest = max(chunk.weights.shape[1] for chunk in self._edges)
        width = widest if edge_feature_size is None else edge_feature_size
        if width < widest:
            raise GraphError(f"edge_feature_size={edge_feature_size} is smaller than the largest kernel "
                             f"or spatial weight vector ({widest} entries): pass at least {widest}")
        attr = torch.cat([F.pad(chunk.weights, (0, width - chunk.weights.shape[1])) for chunk in self._edges])
        entries = torch.cat([torch.full((chunk.source.numel(),), chunk.weights.shape[1]) for chunk in self._edges])
        return {
            "edge_index": torch.stack([torch.cat([chunk.source for chunk in self._edges]),
                                       torch.cat([chunk.target for chunk in self._edges])]),
            "edge_attr": attr,
            "edge_mask": torch.arange(width).unsqueeze(0) < entries.unsqueeze(1),
            "edge_type": torch.cat([torch.full((chunk.source.numel(),), int(chunk.edge_type))
                                    for chunk in self._edges]),
            "edge_layer": torch.cat([torch.full((chunk.source.numel(),), chunk.layer) for chunk in self._edges]),
        }
