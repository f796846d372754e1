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

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from metaprune.errors import PruneError
from metaprune.inputs import ExampleInputs, output_signature, output_tensors, run_model
from metaprune.prune import heads as attention_heads

TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: Layers whose output channels root a prunable group (and whose FLOPs are bilinear in their widths).
CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, *TRANSPOSED_CONVS, nn.Linear)
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


def out_dim(layer: nn.Module) -> int:
    """The weight dimension of a layer's output channels (1 for transposed convolutions, else 0)."""
    return 1 if isinstance(layer, TRANSPOSED_CONVS) else 0


def layer_widths(layer: nn.Module) -> tuple[int, int]:
    """(input, output) channels or features of a conv/linear layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


@dataclass
class PrunableGroup:
    """One unit of structured pruning: ``size`` channels (kind ``channel``) or heads (kind ``head``).

    ``step`` is the group's channel granularity: a group that holds a grouped convolution
    (``groups=g``) or a multi-head attention embedding (``num_heads=h``) keeps a multiple of
    ``step = lcm(g, h, ...)`` channels and loses the same positions in each of its ``step``
    equal chunks, so every convolution group and every head keeps the same width (this is
    torch-pruning's channel grouping). ``in_width`` / ``out_width`` map each conv/linear layer
    to how many of its input / output channels one channel of the group occupies (more than
    one after a flatten), which makes the cost model exact when several groups feed one layer
    (a concatenation).
    """

    name: str
    kind: str
    size: int
    out_layers: list[str] = field(default_factory=list)
    in_layers: list[str] = field(default_factory=list)
    step: int = 1
    in_width: dict[str, int] = field(default_factory=dict)
    out_width: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ForwardTrace:
    """What one forward pass shows: the innermost modules that return the output's tensors (in output
    order) and every module whose ``forward`` ran."""

    producers: list[str]
    called: set[str]


def trace_forward(model: nn.Module, example_input: ExampleInputs) -> ForwardTrace:
    """One eval-mode, no-grad forward pass of ``model`` with hooks on every module (see :class:`ForwardTrace`)."""
    produced: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # ids are only unique among living tensors
    called: set[str] = set()

    def record(name: str):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            for tensor in output_tensors(output):
                alive.append(tensor)
                produced.setdefault(id(tensor), name)  # inner modules finish first
        return hook

    modules = [(name, module) for name, module in model.named_modules() if name]
    hooks = [module.register_forward_hook(record(name)) for name, module in modules]
    hooks += [module.register_forward_pre_hook(lambda _m, _a, name=name: called.add(name)) for name, module in modules]
    was_training = model.training
    model.eval()  # a batch of one through BatchNorm needs running statistics
    try:
        with torch.no_grad():
            output = run_model(model, example_input)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    producers = list(dict.fromkeys(produced[id(tensor)] for tensor in output_tensors(output) if id(tensor) in produced))
    return ForwardTrace(producers, called)


def output_layers(model: nn.Module, trace: ForwardTrace) -> list[str]:
    """Names of the Conv/Linear layers whose outputs are the model's outputs (never pruned); the last
    Conv/Linear layer when none returns an output tensor itself."""
    modules = dict(model.named_modules())
    names = [name for name in trace.producers if isinstance(modules[name], CONV_LINEAR)]
    if not names:
        last = [name for name, module in modules.items() if isinstance(module, CONV_LINEAR)]
        names = last[-1:]
    return names


def _output_anchors(graph: Any, model: nn.Module, producers: list[str]) -> set[str]:
    """The layers whose channels are the output's channels: each producer if it is a conv/linear or
    norm layer, else the nearest such layers upstream of it in torch-pruning's graph."""
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    anchors: set[str] = set()
    for producer in producers:
        module = modules[producer]
        if isinstance(module, (*CONV_LINEAR, *CHANNEL_NORMS, nn.MultiheadAttention)):
            anchors.add(producer)
            continue
        frontier = [graph.module2node[module]] if module in graph.module2node else []
        seen = set()
        while frontier:
            node = frontier.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node.module, (*CONV_LINEAR, *CHANNEL_NORMS)) and node.module in names:
                anchors.add(names[node.module])
            else:
                frontier.extend(node.inputs)
    return anchors


def _describe_module(name: str, module: nn.Module) -> str:
    if isinstance(module, CONV_LINEAR):
        in_width, out_width = layer_widths(module)
        return f"{name or 'the model'} ({type(module).__name__}: {in_width} -> {out_width} channels)"
    if isinstance(module, nn.MultiheadAttention):
        return f"{name} (MultiheadAttention: embed_dim {module.embed_dim}, {module.num_heads} heads)"
    return f"{name or 'the model'} ({type(module).__name__})"


def check_forward(model: nn.Module, example_input: ExampleInputs, expected: Any) -> None:
    """PruneError unless ``model`` runs on ``example_input`` and returns the structure and shapes ``expected``
    (an :func:`~metaprune.inputs.output_signature`); the error names the module that failed."""
    running: list[str] = []
    failed: list[str] = []
    names = {module: name for name, module in model.named_modules()}

    def enter(module: nn.Module, _args: Any) -> None:
        running.append(names.get(module, type(module).__name__))

    def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
        running.pop()

    handles = [handle for module in names for handle in (module.register_forward_pre_hook(enter),
                                                          module.register_forward_hook(leave))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = run_model(model, example_input)
    except Exception as error:  # any shape error deep inside torch: report where, not how
        failed = running[-1:] or [""]
        modules = dict(model.named_modules())
        raise PruneError(f"the pruned model fails at {_describe_module(failed[0], modules[failed[0]])}: "
                         f"{str(error).splitlines()[0]}") from error
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    found = output_signature(output)
    if found != expected:
        raise PruneError(f"pruning changed the model's output from {expected} to {found}: a pruned group reaches "
                         "the output; pass the layers that produce it as ignored_layers")


class ModelGroups:
    """The prunable groups of one model, plus the machinery to remove channels from them."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignored_layers: list[str] | None = None):
        self.model = model
        self.example_input = example_input
        self.history: list[dict[str, Any]] = []
        modules = dict(model.named_modules())
        self.attention = {name: module for name, module in modules.items() if attention_heads.is_attention(module)}
        #: q/k/v projections of attention modules with separate projections -> their head count
        self.projection_heads = {layer: heads for module in modules.values()
                                 if (found := attention_heads.separate_projections(module))
                                 for layer, heads in [(layer, found[1]) for layer in found[0]]}
        was_training = model.training
        model.eval()  # trace with running BN statistics: a batch of one is a valid example
        try:
            self._trace(ignored_layers)
        finally:
            model.train(was_training)

    def _trace(self, ignored_layers: list[str] | None) -> None:
        model, example_input = self.model, self.example_input
        modules = dict(model.named_modules())
        unknown = set(ignored_layers or []) - set(modules)
        if unknown:
            raise PruneError(f"ignored layers not found in the model: {sorted(unknown)}")
        try:
            with torch.enable_grad():
                # trace from the output's tensors only (a ModelOutput may also hold caches and configs)
                self.graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, output_transform=output_tensors, verbose=False)
        except Exception as error:  # torch-pruning raises bare exceptions on untraceable models
            raise PruneError(f"cannot trace {type(model).__name__} for structured pruning: {error}") from error
        # The output's channels stay: the layers that make them are never pruned.
        trace = trace_forward(model, example_input)
        ignored_names = set(ignored_layers or []) | set(output_layers(model, trace))
        anchors = _output_anchors(self.graph, model, trace.producers)
        ignored_names |= anchors
        ignored_names |= {f"{name}.qkv" for name in self.attention}
        # A norm layer on the output passes its channels straight through: its group stays whole.
        frozen = {modules[name] for name in anchors if not isinstance(modules[name], CONV_LINEAR)}
        self._module_names = {module: name for name, module in modules.items()}
        ignored = [modules[name] for name in ignored_names]
        self.groups: list[PrunableGroup] = []
        for tp_group in self.graph.get_all_groups(ignored_layers=ignored, root_module_types=CONV_LINEAR):
            if not any(item.dep.target.module in frozen for item in tp_group):
                self.groups.append(self._describe(tp_group))
        for name, module in self.attention.items():
            width = attention_heads.head_dim(module)
            self.groups.append(PrunableGroup(name, "head", module.num_heads, [f"{name}.qkv"], [f"{name}.proj"],
                                             in_width={f"{name}.proj": width}, out_width={f"{name}.qkv": 3 * width}))
        self.by_name = {group.name: group for group in self.groups}

    def _describe(self, tp_group: Any) -> PrunableGroup:
        root = tp_group[0].dep.target.module
        size = len(tp_group[0].idxs)
        group = PrunableGroup(self._module_names[root], "channel", size)
        chunks = [1]
        for item in tp_group:
            layer, handler = item.dep.target.module, item.dep.handler
            is_out = self.graph.is_out_channel_pruning_fn(handler)
            chunks.append(self._channel_chunks(layer, is_out))
            if not isinstance(layer, (*CONV_LINEAR, nn.MultiheadAttention)):
                continue
            name = self._module_names[layer]
            width = max(1, len(item.idxs) // max(1, size))
            if isinstance(layer, nn.MultiheadAttention):
                group.out_width[name] = width  # its embedding width: inputs and outputs at once
            elif is_out:
                group.out_layers.append(name)
                group.out_width[name] = width
            else:
                group.in_layers.append(name)
                group.in_width[name] = width
        group.step = math.lcm(*chunks)
        if size % group.step:
            group.step = 1 if size < group.step else math.gcd(size, group.step)
        return group

    def _channel_chunks(self, layer: Any, is_out: bool) -> int:
        """Equal chunks a layer's channels fall into (torch-pruning's channel groups); 1 if none."""
        if isinstance(layer, nn.MultiheadAttention):
            return int(layer.num_heads)
        if is_out and layer in self.projection_heads:
            return self.projection_heads[layer]
        if not isinstance(layer, nn.Module):
            return 1
        if isinstance(layer, CONV_LINEAR[:-1]) and layer.groups == layer.out_channels:
            return 1  # depthwise: input and output channel c are one coupled channel
        pruner = self.graph.get_pruner_of_module(layer)
        if pruner is None:
            return 1
        chunks = pruner.get_out_channel_groups(layer) if is_out else pruner.get_in_channel_groups(layer)
        return int(chunks) if isinstance(chunks, int) and chunks > 1 else 1

    def removal(self, group: PrunableGroup, scores: torch.Tensor, count: int) -> list[int]:
        """The ``count`` channels of ``group`` to remove, lowest ``scores`` first, in whole chunks.

        With ``group.step > 1`` the scores are averaged over the ``step`` chunks and the same
        positions go in every chunk (``count`` is rounded down to a multiple of ``step``).
        """
        size = self.current_size(group)
        step = group.step if group.kind == "channel" and size % group.step == 0 else 1
        count = (count // step) * step
        if count <= 0:
            return []
        if step == 1:
            return torch.argsort(scores, stable=True)[:count].tolist()
        chunk = size // step
        positions = torch.argsort(scores.reshape(step, chunk).mean(0), stable=True)[: count // step]
        return (positions[None, :] + chunk * torch.arange(step)[:, None]).reshape(-1).tolist()

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
            is_out = self.graph.is_out_channel_pruning_fn(handler)
            if not is_out and getattr(layer, "groups", 1) != 1:
                return None
            dim = out_dim(layer) if is_out else 1 - out_dim(layer)
            role, values = ("out" if is_out else "in"), weight.transpose(0, dim)[idxs].flatten(1)
            grads = grad.transpose(0, dim)[idxs].flatten(1) if grad is not None else None
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
                dim = 0 if parameter.dim() == 1 else (out_dim(layer) if is_out else 1 - out_dim(layer))
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
        attention_heads.sync_head_sizes(self.model)
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
            attention_heads.sync_head_sizes(model)
        except (AttributeError, KeyError, IndexError, RuntimeError) as error:
            raise PruneError(f"cannot replay pruning step {entry.get('module')!r}: {error}") from error
    groups.history = list(history)
    return groups
