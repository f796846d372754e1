"""Graph -> network: read weights back out of a network graph.

Decoding needs only the graph and the module structure: ``layer_names`` says which module each
layer index is, and the ordering contract of :mod:`metaprune.graph.layout` (a layer's edges in
row-major weight order, its nodes consecutive in channel order) says where every weight goes.
Everything is indexing and reshaping, so gradients flow from the returned tensors back to
``graph.x`` and ``graph.edge_attr`` (what meta-training needs).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Batch, Data

from metaprune.errors import GraphError
from metaprune.graph.layout import BIAS_COLUMN

_REQUIRED = ("x", "edge_attr", "edge_layer", "node_bias_layer", "node_norm_layer", "layer_names")


def graph_to_parameters(graph: Data, model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and BatchNorm statistics of ``model`` as encoded in ``graph``.

    Returns ``{qualified name: tensor}`` (e.g. ``"layer1.0.conv1.weight"``,
    ``"bn1.running_var"``), differentiable with respect to ``graph.x`` and ``graph.edge_attr``,
    ready for ``torch.func.functional_call(model, parameters, inputs)``. BatchNorm running
    statistics are returned detached: ``batch_norm`` accepts no gradient through them, and in
    training mode it updates them in place (here on private copies, never on ``graph.x``).
    """
    _check_graph(graph, model)
    num_layers = len(graph.layer_names)
    edge_rows = _rows_by_layer(graph.edge_attr, graph.edge_layer, num_layers)
    bias_rows = _rows_by_layer(graph.x, graph.node_bias_layer, num_layers)
    norm_rows = _rows_by_layer(graph.x, graph.node_norm_layer, num_layers)
    parameters: dict[str, torch.Tensor] = {}
    for layer, name in enumerate(graph.layer_names):
        module = _submodule(model, name)
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            parameters.update(_norm_parameters(name, module, norm_rows[layer]))
            continue
        parameters[f"{name}.weight"] = _weight(name, module.weight, edge_rows[layer])
        if module.bias is not None:
            parameters[f"{name}.bias"] = _matching(name, "bias", module.bias, bias_rows[layer][:, BIAS_COLUMN])
    return parameters


def graph_to_network(graph: Data, model: nn.Module) -> None:
    """Write the weights encoded in ``graph`` into ``model`` in place (no gradient tracking)."""
    parameters = graph_to_parameters(graph, model)
    destinations = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, tensor in parameters.items():
            destinations[name].copy_(tensor)


def _check_graph(graph: Data, model: nn.Module) -> None:
    if isinstance(graph, Batch):
        raise GraphError("graph_to_parameters decodes one network: pass batch.get_example(i), not a Batch")
    if not isinstance(graph, Data) or any(key not in graph for key in _REQUIRED):
        raise GraphError(f"expected a network graph from network_to_graph with attributes {_REQUIRED}")
    if not isinstance(model, nn.Module):
        raise GraphError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _rows_by_layer(values: torch.Tensor, layer_of_row: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    """``values`` rows grouped by layer index, order within a layer kept (rows of layer -1 dropped)."""
    order = torch.argsort(layer_of_row, stable=True)
    counts = torch.bincount(layer_of_row + 1, minlength=num_layers + 1)
    return list(values[order].split(counts.tolist()))[1:]


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError as error:
        raise GraphError(f"the graph has a layer '{name}' that the model does not have: decode into a "
                         "model of the architecture the graph was built from") from error
    if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d):
        raise GraphError(f"graph layer '{name}' is a {type(module).__name__} in this model, which has no "
                         "graph-encoded parameters: wrong architecture")
    return module


def _matching(name: str, what: str, reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    if decoded.numel() != reference.numel():
        raise GraphError(f"layer '{name}': the graph holds {decoded.numel()} {what} values, the model "
                         f"needs {reference.numel()}: the graph was built from a different architecture")
    return decoded.reshape(reference.shape).contiguous()  # strided views would change kernel paths


def _weight(name: str, reference: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
    """Weight from the layer's edges: each edge holds ``numel / edges`` consecutive weights."""
    edges, width = edge_features.shape
    entries_per_edge = reference.numel() // max(edges, 1)
    if edges * entries_per_edge != reference.numel() or entries_per_edge > width:
        raise GraphError(f"layer '{name}': {edges} edges of width {width} cannot hold a weight of shape "
                         f"{tuple(reference.shape)}: the graph was built from a different architecture")
    return edge_features[:, :entries_per_edge].reshape(reference.shape).contiguous()


def _norm_parameters(name: str, norm: nn.Module, node_features: torch.Tensor) -> dict[str, torch.Tensor]:
    stored = {}
    if norm.affine:
        stored |= {"weight": node_features[:, 1], "bias": node_features[:, 2]}
    if norm.track_running_stats:
        statistics = node_features[:, 3:5].detach()
        stored |= {"running_mean": statistics[:, 0], "running_var": statistics[:, 1]}
    return {f"{name}.{key}": _matching(name, key, getattr(norm, key), value) for key, value in stored.items()}
