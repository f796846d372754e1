"""Prunable groups: every set of coupled channels (or attention heads) that must go together.

This is the only module of metaprune that talks to torch-pruning (DepGraph). It traces a
model once, enumerates the channel groups that torch-pruning finds (a residual stream is
one group, a conv's output channels with their BN and the next layer's input channels are
another), adds one head group per fused-qkv attention module, and removes channels or heads
physically. Every removal is appended to :attr:`ModelGroups.history`, a plain-JSON record
that :func:`replay` re-applies to a fresh dense copy of the architecture: that is how a
pruned model is rebuilt without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from metaprune.errors import PruneError
from metaprune.prune import heads as attention_heads

CONV_LINEAR = (nn.Conv2d, nn.Conv1d, nn.Linear)
#: Per-channel normalisation layers: their scale and shift are a group's "norm" rows.
CHANNEL_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


@dataclass
class ParamRows:
    """A coupled weight seen channel-first: ``values[i]`` belongs to group channel ``channels[i]``.

    ``role`` is ``"out"`` (a layer's output rows), ``"in"`` (a consumer's input columns)
    or ``"norm"`` (BatchNorm/LayerNorm scale).
    """

    role: str
    module_name: str
    values: torch.Tensor
    grads: torch.Tensor | None
    channels: torch.Tensor


@dataclass
class PrunableGroup:
    """One unit of structured pruning: ``size`` channels (kind ``channel``) or heads (kind ``head``)."""

    name: str
    kind: str
    size: int
    out_layers: list[str] = field(default_factory=list)
    in_layers: list[str] = field(default_factory=list)


def find_output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Conv/Linear layers whose outputs are the model's outputs (never pruned)."""
    produced: dict[int, str] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, output, name=name: produced.__setitem__(id(output), name))
        for name, module in model.named_modules()
        if isinstance(module, CONV_LINEAR)
    ]
    try:
        with torch.no_grad():
            output = model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = output if isinstance(output, (tuple, list)) else [output]
    names = [produced[id(tensor)] for tensor in outputs if id(tensor) in produced]
    if not names:
        last = [name for name, module in model.named_modules() if isinstance(module, CONV_LINEAR)]
        names = last[-1:]
    return names


class ModelGroups:
    """The prunable groups of one model, plus the machinery to remove channels from them."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignored_layers: list[str] | None = None):
        self.model = model
        self.example_input = example_input
        self.history: list[dict[str, Any]] = []
        modules = dict(model.named_modules())
        self.attention = {name: module for name, module in modules.items() if attention_heads.is_attention(module)}
        was_training = model.training
        model.eval()  # trace with running BN statistics: a batch of one is a valid example
        try:
            self._trace(ignored_layers)
        finally:
            model.train(was_training)

    def _trace(self, ignored_layers: list[str] | None) -> None:
        model, example_input = self.model, self.example_input
        modules = dict(model.named_modules())
        ignored_names = set(ignored_layers or []) | set(find_output_layers(model, example_input))
        ignored_names |= {f"{name}.qkv" for name in self.attention}
        unknown = ignored_names - set(modules)
        if unknown:
            raise PruneError(f"ignored layers not found in the model: {sorted(unknown)}")
        try:
            with torch.enable_grad():
                self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
        except Exception as error:  # torch-pruning raises bare exceptions on untraceable models
            raise PruneError(f"cannot trace {type(model).__name__} for structured pruning: {error}") from error
        self._module_names = {module: name for name, module in modules.items()}
        ignored = [modules[name] for name in ignored_names]
        self.groups: list[PrunableGroup] = []
        for tp_group in self.graph.get_all_groups(ignored_layers=ignored, root_module_types=CONV_LINEAR):
            self.groups.append(self._describe(tp_group))
        for name, module in self.attention.items():
            self.groups.append(PrunableGroup(name, "head", module.num_heads, [f"{name}.qkv"], [f"{name}.proj"]))
        self.by_name = {group.name: group for group in self.groups}

    def _describe(self, tp_group: Any) -> PrunableGroup:
        root = tp_group[0].dep.target.module
        group = PrunableGroup(self._module_names[root], "channel", len(tp_group[0].idxs))
        for item in tp_group:
            layer, handler = item.dep.target.module, item.dep.handler
            if not isinstance(layer, CONV_LINEAR):
                continue
            name = self._module_names[layer]
            if self.graph.is_out_channel_pruning_fn(handler):
                group.out_layers.append(name)
            else:
                group.in_layers.append(name)
        return group

    def current_size(self, group: PrunableGroup) -> int:
        """Channels (or heads) the group has now, after any removals."""
        root = self.model.get_submodule(group.name)
        if group.kind == "head":
            return root.num_heads
        return int(self.graph.get_out_channels(root))

    def rows(self, group: PrunableGroup) -> list[ParamRows]:
        """The group's coupled weights, channel-first, for scoring (see :mod:`metaprune.prune.criteria`)."""
        if group.kind == "head":
            module = self.model.get_submodule(group.name)
            has_grad = module.qkv.weight.grad is not None and module.proj.weight.grad is not None
            values = attention_heads.head_rows(module)
            grads = attention_heads.head_rows(module, use_grad=True) if has_grad else [None, None]
            channels = torch.arange(module.num_heads)
            return [
                ParamRows(role, f"{group.name}.{part}", value, grad, channels)
                for role, part, value, grad in zip(("out", "in"), ("qkv", "proj"), values, grads)
            ]
        root = self.model.get_submodule(group.name)
        size = self.current_size(group)
        tp_group = self.graph.get_pruning_group(root, self._out_fn(root), list(range(size)))
        return [rows for item in tp_group if (rows := self._item_rows(item)) is not None]

    def _item_rows(self, item: Any) -> ParamRows | None:
        layer, handler = item.dep.target.module, item.dep.handler
        if not isinstance(layer, nn.Module) or getattr(layer, "weight", None) is None:
            return None
        idxs = torch.as_tensor([int(getattr(i, "idx", i)) for i in item.idxs], dtype=torch.long)
        roots = item.root_idxs if item.root_idxs is not None else [getattr(i, "root_idx", i) for i in item.idxs]
        channels = torch.as_tensor([int(i) for i in roots], dtype=torch.long)
        weight, grad = layer.weight.detach(), layer.weight.grad
        if isinstance(layer, CONV_LINEAR):
            if self.graph.is_out_channel_pruning_fn(handler):
                role, values = "out", weight[idxs].flatten(1)
                grads = grad[idxs].flatten(1) if grad is not None else None
            elif getattr(layer, "groups", 1) == 1:
                role, values = "in", weight.transpose(0, 1)[idxs].flatten(1)
                grads = grad.transpose(0, 1)[idxs].flatten(1) if grad is not None else None
            else:
                return None
        elif isinstance(layer, CHANNEL_NORMS) and weight.dim() == 1:
            role, values = "norm", weight[idxs][:, None]
            grads = grad[idxs][:, None] if grad is not None else None
        else:
            return None
        return ParamRows(role, self._module_names.get(layer, ""), values, grads, channels)

    def coupled_parameters(self, group: PrunableGroup) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
        """Where each channel of ``group`` lives in the model's parameters, for differentiable penalties.

        Returns ``(parameter name, dim, indices along dim, group channel of each index)`` for every
        coupled weight, bias and norm parameter, so that a group norm can be computed from any
        parameter dict of the same architecture (e.g. weights rewritten by a metanetwork).
        """
        modules = dict(self.model.named_modules())
        if group.kind == "head":
            module = self.model.get_submodule(group.name)
            rows = attention_heads.head_channel_index(module, list(range(module.num_heads)))
            width = attention_heads.head_dim(module)
            heads = (torch.arange(rows.numel()) // width) % module.num_heads
            columns = rows[: module.num_heads * width]
            return [(f"{group.name}.qkv.weight", 0, rows, heads), (f"{group.name}.proj.weight", 1, columns,
                                                                   heads[: columns.numel()])]
        root = self.model.get_submodule(group.name)
        tp_group = self.graph.get_pruning_group(root, self._out_fn(root), list(range(self.current_size(group))))
        coupled = []
        for item in tp_group:
            layer, handler = item.dep.target.module, item.dep.handler
            if not isinstance(layer, nn.Module) or layer not in self._module_names:
                continue
            name = self._module_names[layer]
            idxs = torch.as_tensor([int(getattr(i, "idx", i)) for i in item.idxs], dtype=torch.long)
            roots = item.root_idxs if item.root_idxs is not None else [getattr(i, "root_idx", i) for i in item.idxs]
            channels = torch.as_tensor([int(i) for i in roots], dtype=torch.long)
            is_out = self.graph.is_out_channel_pruning_fn(handler)
            for parameter_name, parameter in layer.named_parameters(recurse=False):
                if parameter.dim() == 1 and not is_out:
                    continue  # a consumer's bias is not indexed by its input channels
                dim = 0 if (is_out or parameter.dim() == 1) else 1
                if isinstance(layer, CONV_LINEAR) and getattr(layer, "groups", 1) > 1 and not is_out:
                    continue
                if parameter.shape[dim] > int(idxs.max()) and name in modules:
                    coupled.append((f"{name}.{parameter_name}" if name else parameter_name, dim, idxs, channels))
        return coupled

    def _out_fn(self, module: nn.Module) -> Any:
        return self.graph.get_pruner_of_module(module).prune_out_channels

    def remove(self, group: PrunableGroup, indices: list[int]) -> None:
        """Physically remove channels (or heads) ``indices`` of ``group`` from the model."""
        indices = sorted(set(int(index) for index in indices))
        if not indices:
            return
        size = self.current_size(group)
        if indices[0] < 0 or indices[-1] >= size or len(indices) >= size:
            raise PruneError(f"cannot remove {len(indices)} of {size} channels from group {group.name!r}")
        if group.kind == "head":
            attention_heads.remove_heads(self.model.get_submodule(group.name), indices)
            self.history.append({"kind": "head", "module": group.name, "indices": indices})
            return
        root = self.model.get_submodule(group.name)
        self.graph.get_pruning_group(root, self._out_fn(root), indices).prune()
        module_name, is_out, pruned = self.graph.pruning_history()[-1]
        self.history.append({"kind": "channel", "module": module_name, "out": bool(is_out), "indices": [int(i) for i in pruned]})


def replay(model: nn.Module, example_input: torch.Tensor, history: list[dict[str, Any]]) -> ModelGroups:
    """Re-apply a removal history (from :attr:`ModelGroups.history`) to a dense ``model`` in place."""
    groups = ModelGroups(model, example_input)
    for entry in history:
        try:
            module = model.get_submodule(entry["module"])
            if entry["kind"] == "head":
                attention_heads.remove_heads(module, entry["indices"])
                continue
            pruner = groups.graph.get_pruner_of_module(module)
            prune_fn = pruner.prune_out_channels if entry["out"] else pruner.prune_in_channels
            groups.graph.get_pruning_group(module, prune_fn, entry["indices"]).prune()
        except (AttributeError, KeyError, IndexError, RuntimeError) as error:
            raise PruneError(f"cannot replay pruning step {entry.get('module')!r}: {error}") from error
    groups.history = list(history)
    return groups
