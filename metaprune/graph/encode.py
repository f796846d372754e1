"""Network -> graph: walk an fx trace and turn every layer into nodes, edges and node features.

Representation choices (see :mod:`metaprune.graph.layout` for the attributes):

* Conv2d ``[out, in/groups, kh, kw]``: one edge per connected (in, out) channel pair whose
  feature is the flattened ``kh * kw`` kernel. groups=1 and depthwise convs are supported.
* Linear ``[out, in]``: one edge per (in, out) pair with a single weight, except after a
  flatten of ``C`` channels with ``S = H * W`` positions each: then the edge joins channel ``c``
  to neuron ``o`` and carries the ``S`` spatial weights ``W[o, c*S:(c+1)*S]`` so the conv
  channel stays one node (it is what structured pruning removes).
* A network input that is only ever flattened (an MLP on images) gets one node per feature.
* Residual add ``a + b``: new sum nodes, each fed by a :data:`EdgeType.RESIDUAL` edge from
  channel ``c`` of ``a`` and of ``b``; all three share a channel group.
* Bias and BatchNorm parameters are node features of the channels they act on.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn
from torch_geometric.data import Data

from metaprune.errors import GraphError
from metaprune.graph.builder import ChannelValue, GraphBuilder
from metaprune.graph.layout import BIAS_COLUMN, EdgeType, NodeType
from metaprune.graph.tracing import OpKind, classify, tensor_shape, trace_with_shapes


def network_to_graph(model: nn.Module, example_input: torch.Tensor,
                     edge_feature_size: int | None = None) -> Data:
    """Encode ``model`` as a channel graph (layout in :mod:`metaprune.graph.layout`).

    ``example_input`` (with a batch dimension, ``[B, C, H, W]`` or ``[B, F]``) fixes the spatial
    sizes. ``edge_feature_size`` pads every edge feature to that many entries (default: the
    largest kernel area / spatial weight count in the network). The model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise GraphError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() not in (2, 4):
        raise GraphError("example_input must be a tensor of shape [batch, channels, height, width] or "
                         f"[batch, features], got {getattr(example_input, 'shape', type(example_input))}")
    dtypes = {parameter.dtype for parameter in model.parameters()} or {torch.get_default_dtype()}
    if len(dtypes) != 1:
        raise GraphError(f"model parameters must share one floating dtype, found {sorted(map(str, dtypes))}")
    traced = trace_with_shapes(model, example_input)
    walker = _NetworkWalker(traced, GraphBuilder(dtypes.pop()))
    for node in traced.graph.nodes:
        walker.visit(node)
    return walker.builder.finish(edge_feature_size)


class _NetworkWalker:
    """Visits fx nodes in order, mapping each tensor to the :class:`ChannelValue` it carries."""

    def __init__(self, traced: fx.GraphModule, builder: GraphBuilder) -> None:
        self.traced = traced
        self.builder = builder
        self.values: dict[fx.Node, ChannelValue | None] = {}

    def visit(self, node: fx.Node) -> None:
        handler = getattr(self, f"_{classify(node, self.traced).value}")
        self.values[node] = handler(node)

    def _operand(self, node: fx.Node, position: int = 0) -> ChannelValue:
        argument = node.args[position] if position < len(node.args) else None
        value = self.values.get(argument) if isinstance(argument, fx.Node) else None
        if value is None:
            raise GraphError(f"fx node '{node.name}' ({node.format_node()}) needs a network tensor as "
                             f"argument {position}; constants and shapes cannot be encoded")
        return value

    def _module(self, node: fx.Node) -> nn.Module:
        return self.traced.get_submodule(str(node.target))

    def _fail(self, node: fx.Node, reason: str) -> GraphError:
        return GraphError(f"fx node '{node.name}' ({node.format_node()}): {reason}")

    def _input(self, node: fx.Node) -> ChannelValue:
        if any(other.op == "placeholder" for other in self.values):
            raise self._fail(node, "networks with more than one input tensor are not supported")
        shape = tensor_shape(node)
        only_flattened = all(classify(user, self.traced) in (OpKind.FLATTEN, OpKind.SHAPE) for user in node.users)
        if len(shape) == 2 or only_flattened:
            features = math.prod(shape[1:])
            return ChannelValue(self.builder.add_nodes(features, NodeType.INPUT), features, 1, flat=True)
        return ChannelValue(self.builder.add_nodes(shape[1], NodeType.INPUT), shape[1], shape[2] * shape[3], False)

    def _conv(self, node: fx.Node) -> ChannelValue:
        conv, value = self._module(node), self._operand(node)
        if value.flat or conv.in_channels != value.channels:
            raise self._fail(node, f"Conv2d expects {conv.in_channels} channels of a 4-d tensor, "
                                   f"got {value.channels} {'flat ' if value.flat else ''}channels")
        depthwise = conv.groups == conv.in_channels == conv.out_channels
        if conv.groups != 1 and not depthwise:
            raise self._fail(node, f"grouped conv with groups={conv.groups} is not supported "
                                   "(only groups=1 and depthwise)")
        layer = self.builder.register_layer(str(node.target), node.name)
        _, out_channels, height, width = tensor_shape(node)
        output = ChannelValue(self.builder.add_nodes(out_channels, NodeType.HIDDEN), out_channels,
                              height * width, flat=False)
        inputs_per_group = conv.in_channels // conv.groups
        out_index = torch.arange(out_channels).repeat_interleave(inputs_per_group)
        in_index = (out_index // (out_channels // conv.groups)) * inputs_per_group + torch.arange(
            inputs_per_group).repeat(out_channels)
        kernel = conv.weight.reshape(out_channels * inputs_per_group, -1)
        self.builder.add_edges(value.first_node + in_index, output.first_node + out_index, kernel,
                               EdgeType.CONV, layer)
        if conv.bias is not None:
            self.builder.write_features(output, (BIAS_COLUMN,), conv.bias.unsqueeze(1), layer, node.name)
        if depthwise:
            self.builder.couple(value, output)
        return output

    def _linear(self, node: fx.Node) -> ChannelValue:
        linear, value = self._module(node), self._operand(node)
        shape = tensor_shape(node)
        if not value.flat or len(shape) != 2 or linear.in_features != value.channels * value.spatial_size:
            raise self._fail(node, f"Linear expects a [batch, {linear.in_features}] input; got "
                                   f"{value.channels} channels x {value.spatial_size} positions "
                                   f"({'flat' if value.flat else 'not flattened'})")
        layer = self.builder.register_layer(str(node.target), node.name)
        output = ChannelValue(self.builder.add_nodes(linear.out_features, NodeType.HIDDEN),
                              linear.out_features, 1, flat=True)
        in_index = torch.arange(value.channels).repeat(linear.out_features)
        out_index = torch.arange(linear.out_features).repeat_interleave(value.channels)
        spatial_weights = linear.weight.reshape(linear.out_features * value.channels, value.spatial_size)
        self.builder.add_edges(value.first_node + in_index, output.first_node + out_index, spatial_weights,
                               EdgeType.LINEAR, layer)
        if linear.bias is not None:
            self.builder.write_features(output, (BIAS_COLUMN,), linear.bias.unsqueeze(1), layer, node.name)
        return output

    def _norm(self, node: fx.Node) -> ChannelValue:
        norm, value = self._module(node), self._operand(node)
        shape = tensor_shape(node)
        fits = (len(shape) == 4 and not value.flat) if isinstance(norm, nn.BatchNorm2d) else (
            len(shape) == 2 and value.spatial_size == 1)
        if not fits or norm.num_features != value.channels:
            raise self._fail(node, f"{type(norm).__name__}({norm.num_features}) does not normalise the "
                                   f"{value.channels} channels of a tensor of shape {shape}")
        columns, features = [], []
        if norm.affine:
            columns += [1, 2]
            features += [norm.weight, norm.bias]
        if norm.track_running_stats:
            columns += [3, 4]
            features += [norm.running_mean, norm.running_var]
        if columns:
            layer = self.builder.register_layer(str(node.target), node.name)
            self.builder.write_features(value, tuple(columns), torch.stack(features, dim=1), layer, node.name)
        return value

    def _elementwise(self, node: fx.Node) -> ChannelValue:
        value = self._operand(node)
        if tensor_shape(node) != tensor_shape(node.args[0]):
            raise self._fail(node, "an elementwise op must keep the tensor shape")
        return value

    def _pool(self, node: fx.Node) -> ChannelValue:
        value, shape = self._operand(node), tensor_shape(node)
        if value.flat or len(shape) != 4 or shape[1] != value.channels:
            raise self._fail(node, "pooling must act on the spatial dimensions of a [batch, C, H, W] tensor")
        return ChannelValue(value.first_node, value.channels, shape[2] * shape[3], flat=False)

    def _spatial_mean(self, node: fx.Node) -> ChannelValue:
        value, shape = self._operand(node), tensor_shape(node)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = {dims} if isinstance(dims, int) else set(dims or ())
        if value.flat or {dim % 4 for dim in dims} != {2, 3} or shape[:2] != tensor_shape(node.args[0])[:2]:
            raise self._fail(node, "mean is supported only over the spatial dimensions (2, 3)")
        return ChannelValue(value.first_node, value.channels, 1, flat=len(shape) == 2)

    def _flatten(self, node: fx.Node) -> ChannelValue:
        value, shape = self._operand(node), tensor_shape(node)
        if shape != (tensor_shape(node.args[0])[0], value.channels * value.spatial_size):
            raise self._fail(node, f"reshape to {shape} is not a flatten of all channels and positions "
                                   "into [batch, features]")
        return ChannelValue(value.first_node, value.channels, value.spatial_size, flat=True)

    def _add(self, node: fx.Node) -> ChannelValue:
        first, second = self._operand(node, 0), self._operand(node, 1)
        if node.kwargs.get("alpha", 1) != 1:
            raise self._fail(node, "torch.add with alpha != 1 is not supported")
        shapes = {tensor_shape(node), tensor_shape(node.args[0]), tensor_shape(node.args[1])}
        if len(shapes) != 1 or (first.channels, first.spatial_size, first.flat) != (
                second.channels, second.spatial_size, second.flat):
            raise self._fail(node, "residual add needs two operands of the same shape (no broadcasting)")
        return self.builder.add_residual_sum((first, second))

    def _shape(self, node: fx.Node) -> None:
        return None

    def _output(self, node: fx.Node) -> None:
        self.builder.mark_output(self._operand(node))
        return None
