"""Symbolic tracing with shapes, and the classification of fx nodes into supported op kinds.

Only the ops listed here can be encoded; anything else raises :class:`GraphError` naming the
op and its fx node, so unsupported architectures fail loudly instead of converting wrongly.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager
from enum import Enum

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from metaprune.errors import GraphError


class OpKind(Enum):
    """What an fx node does to the channels flowing through it."""

    INPUT = "input"
    CONV = "conv"
    LINEAR = "linear"
    NORM = "norm"
    ELEMENTWISE = "elementwise"  # channel-wise, shape-preserving (activations, dropout)
    POOL = "pool"  # spatial resampling that keeps channels
    SPATIAL_MEAN = "spatial_mean"  # x.mean((2, 3)), global average pooling
    FLATTEN = "flatten"
    ADD = "add"
    SHAPE = "shape"  # produces no tensor (x.size(0), x.shape): nothing to encode
    OUTPUT = "output"


ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh,
                       nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity,
                       nn.Dropout, nn.Dropout1d, nn.Dropout2d)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)

FUNCTION_KINDS = {
    **dict.fromkeys((operator.add, operator.iadd, torch.add), OpKind.ADD),
    torch.flatten: OpKind.FLATTEN,
    torch.mean: OpKind.SPATIAL_MEAN,
    **dict.fromkeys((F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d), OpKind.POOL),
    **dict.fromkeys((F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardswish, F.hardsigmoid,
                     F.hardtanh, F.mish, F.softplus, F.sigmoid, F.tanh, F.dropout, F.dropout2d,
                     torch.relu, torch.sigmoid, torch.tanh), OpKind.ELEMENTWISE),
}
METHOD_KINDS = {
    **dict.fromkeys(("add", "add_"), OpKind.ADD),
    **dict.fromkeys(("flatten", "view", "reshape"), OpKind.FLATTEN),
    "mean": OpKind.SPATIAL_MEAN,
    **dict.fromkeys(("relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"), OpKind.ELEMENTWISE),
}


@contextmanager
def _evaluation_mode(model: nn.Module):
    """Eval mode for the shape pass (BatchNorm must not update its running statistics)."""
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, was_training in training.items():
            module.training = was_training


def trace_with_shapes(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """``torch.fx`` trace of ``model`` whose tensor nodes carry ``meta["tensor_meta"]`` shapes."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types; all mean "cannot trace"
        raise GraphError(
            f"torch.fx cannot trace {type(model).__name__}: {error}. Make forward free of "
            "data-dependent control flow, or convert a model built from supported layers") from error
    with _evaluation_mode(model), torch.no_grad():
        try:
            ShapeProp(traced).propagate(example_input)
        except Exception as error:  # the model's own forward failed on the example input
            raise GraphError(f"running {type(model).__name__} on an example input of shape "
                             f"{tuple(example_input.shape)} failed: {error}") from error
    return traced


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """Shape of the tensor ``node`` produces, ``None`` if it produces no tensor."""
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return None
    if not isinstance(meta, TensorMetadata):
        raise GraphError(f"fx node '{node.name}' ({node.format_node()}) returns several tensors; "
                         "only single-tensor ops are supported")
    return tuple(meta.shape)


def classify(node: fx.Node, traced: fx.GraphModule) -> OpKind:
    """The :class:`OpKind` of ``node``; raises :class:`GraphError` for unsupported ops."""
    if node.op == "placeholder":
        return OpKind.INPUT
    if node.op == "output":
        return OpKind.OUTPUT
    if node.op == "get_attr":
        raise GraphError(f"unsupported {_describe(node, traced)} at fx node '{node.name}': parameters "
                         "must belong to Conv2d, Linear or BatchNorm modules")
    if tensor_shape(node) is None:
        return OpKind.SHAPE
    kind = None
    if node.op == "call_module":
        kind = _module_kind(traced.get_submodule(str(node.target)))
    elif node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target)
    elif node.op == "call_method":
        kind = METHOD_KINDS.get(str(node.target))
    if kind is None:
        raise GraphError(f"unsupported op {_describe(node, traced)} at fx node '{node.name}' "
                         f"({node.format_node()}); supported: Conv2d, Linear, BatchNorm1d/2d, residual "
                         "add, pooling, flatten/view, elementwise activations and dropout")
    return kind


def _module_kind(module: nn.Module) -> OpKind | None:
    if isinstance(module, nn.Conv2d):
        return OpKind.CONV
    if isinstance(module, nn.Linear):
        return OpKind.LINEAR
    if isinstance(module, NORM_MODULES):
        return OpKind.NORM
    if isinstance(module, ELEMENTWISE_MODULES):
        return OpKind.ELEMENTWISE
    if isinstance(module, POOL_MODULES):
        return OpKind.POOL
    if isinstance(module, nn.Flatten):
        return OpKind.FLATTEN
    return None


def _describe(node: fx.Node, traced: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' of type {type(traced.get_submodule(str(node.target))).__name__}"
    if node.op == "get_attr":
        return f"direct use of parameter/buffer '{node.target}' outside a module"
    return f"{node.op} '{getattr(node.target, '__name__', node.target)}'"
