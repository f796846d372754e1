"""Retraining-free layer-by-layer pruning of a stack of blocks (transformer encoders, decoders).

The driver runs calibration inputs through the blocks one at a time. Inside a block, the
``Linear`` layers are pruned in the order they run, in groups of layers that read the same input
(q, k and v together): for each group, the block runs on the calibration inputs with hooks that
accumulate the input statistics of its layers,

    H = sum_t x_t x_t^T      (over real tokens only; padding is masked out),

then a *layer-wise method* (:data:`LAYERWISE_METHODS`: magnitude, Wanda, SparseGPT) turns each
weight into a sparse one. Later groups and later blocks see the outputs of the already pruned
layers, so each layer compensates the errors made before it (sequential calibration).

The per-layer report gives the sparsity reached and the relative output error on the calibration
inputs, ``tr(dW H dW^T) / tr(W H W^T)``, computed from ``H`` without another pass.

With a sparsity target, the blocks may get different sparsities at the same overall one
(:mod:`metaprune.prune.allocation`, e.g. OWL): a first pass through the dense blocks gives the
Wanda scores the allocation reads.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from metaprune.errors import ConfigError, PruneError
from metaprune.prune.allocation import SPARSITY_ALLOCATIONS, AllocationOptions
from metaprune.registry import Registry


@dataclass(frozen=True)
class SparsityTarget:
    """What each layer keeps: a fraction ``sparsity`` of zeros in (0, 1), or an N:M pattern
    (at most ``n`` non-zeros in every ``m`` consecutive weights along the input dimension)."""

    sparsity: float | None = None
    n_m: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if (self.sparsity is None) == (self.n_m is None):
            raise ConfigError("give either a sparsity or an N:M pattern")
        if self.sparsity is not None and not 0.0 < float(self.sparsity) < 1.0:
            raise ConfigError(f"sparsity must lie in (0, 1), got {self.sparsity}")
        if self.n_m is not None:
            n, m = self.n_m
            if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
                raise ConfigError(f"an N:M pattern needs 0 < N < M, got {n}:{m}")

    @property
    def fraction(self) -> float:
        """Fraction of zeros this target asks for."""
        if self.sparsity is not None:
            return float(self.sparsity)
        n, m = self.n_m  # type: ignore[misc]
        return 1.0 - n / m

    def label(self) -> str:
        """``"60%"`` or ``"2:4"``."""
        return f"{self.n_m[0]}:{self.n_m[1]}" if self.n_m else f"{round(100 * float(self.sparsity))}%"


class InputStats:
    """Running ``H = sum_t x_t x_t^T`` (float64) and token count of one layer's input; with dense
    targets also ``G = sum_t x_t d_t^T``, ``d_t`` the same layer's input in the dense model."""

    def __init__(self, features: int) -> None:
        self.hessian = torch.zeros(features, features, dtype=torch.float64)
        self.sums = torch.zeros(features, dtype=torch.float64)
        self.cross: torch.Tensor | None = None
        self.dense_sums: torch.Tensor | None = None
        self.tokens = 0

    def add(self, inputs: torch.Tensor, dense_inputs: torch.Tensor | None = None) -> None:
        """Add ``T x features`` input rows (and the dense model's rows for the same tokens)."""
        rows = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        self.hessian += rows.T @ rows
        self.sums += rows.sum(0)
        if dense_inputs is not None:
            dense = dense_inputs.reshape(-1, dense_inputs.shape[-1]).to(torch.float64)
            self.cross = rows.T @ dense + (self.cross if self.cross is not None else 0.0)
            self.dense_sums = dense.sum(0) + (self.dense_sums if self.dense_sums is not None else 0.0)
        self.tokens += rows.shape[0]

    def bias_shift(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``W mu_target - W' mu``: the mean output error of replacing ``before`` by ``after`` (``mu`` the mean
        input, ``mu_target`` the dense model's mean input with dense targets, else ``mu``)."""
        mean = self.sums / max(self.tokens, 1)
        target = self.dense_sums / max(self.tokens, 1) if self.dense_sums is not None else mean
        return before.to(torch.float64) @ target - after.to(torch.float64) @ mean

    @property
    def squared_norms(self) -> torch.Tensor:
        """``||X_j||^2`` of every input feature ``j`` (the diagonal of ``H``)."""
        return torch.diagonal(self.hessian).clone()


@dataclass(frozen=True)
class LayerwiseOptions:
    """How :func:`prune_blocks` runs beyond the method and target.

    Attributes:
        allocation: a name from :data:`~metaprune.prune.allocation.SPARSITY_ALLOCATIONS`: how a
            sparsity target is spread over the blocks (N:M is always uniform).
        allocation_options: the allocation's strength and outlier threshold.
        method_options: keywords for the method (e.g. ``{"dampening": 0.01}`` for SparseGPT).
        dense_targets: reconstruct the *dense* model's layer outputs from the pruned model's inputs
            (``G`` in :class:`InputStats`) instead of the layer's own outputs on those inputs, so
            a layer also corrects the error of the layers before it (read by SparseGPT).
        bias_correction: add the mean output error on the calibration tokens to each pruned
            layer's bias (:meth:`InputStats.bias_shift`), so the pruned outputs keep their mean.
    """

    allocation: str = "uniform"
    allocation_options: AllocationOptions = field(default_factory=AllocationOptions)
    method_options: Mapping[str, Any] = field(default_factory=dict)
    dense_targets: bool = False
    bias_correction: bool = False


#: A layer-wise method: ``prune(weight, stats, target, **options) -> sparse weight`` (same shape, a new
#: tensor); ``options`` are method-specific keywords (e.g. SparseGPT's dampening).
LayerwiseMethod = Callable[..., torch.Tensor]
LAYERWISE_METHODS: Registry[LayerwiseMethod] = Registry("layer-wise method")


def lowest_mask(scores: torch.Tensor, target: SparsityTarget, per_row: bool) -> torch.Tensor:
    """Boolean mask of the weights to zero: the lowest ``scores``, per row or over the whole layer,
    or the ``m - n`` lowest of every ``m`` consecutive columns for an N:M target."""
    rows, columns = scores.shape
    if target.n_m is not None:
        n, m = target.n_m
        if columns % m:
            raise PruneError(f"an N:M pattern {n}:{m} needs input features divisible by {m}, got {columns}")
        groups = scores.reshape(rows, columns // m, m)
        drop = torch.topk(groups, m - n, dim=-1, largest=False).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, drop, True).reshape(rows, columns)
    if per_row:
        count = int(columns * target.fraction)
        drop = torch.topk(scores, count, dim=1, largest=False).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, drop, True)
    count = int(scores.numel() * target.fraction)
    drop = torch.topk(scores.reshape(-1), count, largest=False).indices
    return torch.zeros(scores.numel(), dtype=torch.bool).scatter_(0, drop, True).reshape(rows, columns)


@LAYERWISE_METHODS.register("magnitude")
def magnitude(weight: torch.Tensor, stats: InputStats, target: SparsityTarget) -> torch.Tensor:
    """Baseline: zero the smallest ``|W|`` of the layer (N:M: of every group of ``m``); reads no inputs."""
    return weight.masked_fill(lowest_mask(weight.abs(), target, per_row=False), 0.0)


#: Methods that never read the calibration statistics (the driver skips the calibration passes).
DATA_FREE_METHODS = {"magnitude"}


@dataclass(frozen=True)
class LayerReport:
    """One pruned layer: its name, shape, zero fraction and relative output error on calibration (None for
    a data-free method)."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    relative_error: float | None
    tokens: int


def relative_error(before: torch.Tensor, after: torch.Tensor, stats: InputStats) -> float:
    """``tr(dW H dW^T) / tr(W H W^T)``: relative squared error of the layer's outputs on the calibration inputs."""
    delta = (before - after).to(torch.float64)
    dense = before.to(torch.float64)
    error = torch.einsum("ij,jk,ik->", delta, stats.hessian, delta)
    total = torch.einsum("ij,jk,ik->", dense, stats.hessian, dense)
    return float(error / total.clamp_min(1e-30))


def linear_groups(block: nn.Module, run: Callable[[], Any]) -> list[list[str]]:
    """The ``Linear`` layers of ``block`` in the order they run, grouped by shared input tensor."""
    names = {module: name for name, module in block.named_modules() if isinstance(module, nn.Linear)}
    calls: list[tuple[str, int]] = []

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        if names[module] not in {name for name, _ in calls}:
            calls.append((names[module], id(args[0])))

    handles = [module.register_forward_pre_hook(record) for module in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    for index, (name, source) in enumerate(calls):
        if index and source == calls[index - 1][1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


@dataclass
class BlockInputs:
    """Calibration inputs of one block: hidden states, the other call arguments, and the real-token mask."""

    hidden: torch.Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    token_mask: torch.Tensor


def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, batches: Sequence[dict[str, torch.Tensor]]
) -> list[BlockInputs]:
    """Run ``model`` on tokenized ``batches`` up to ``first_block`` and keep what it receives."""
    captured: list[BlockInputs] = []

    class _Stop(Exception):
        pass

    def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append(BlockInputs(args[0].detach(), args[1:], dict(kwargs), torch.ones(0)))
        raise _Stop

    handle = first_block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in batches:
                try:
                    model(**batch)
                except _Stop:
                    captured[-1].token_mask = batch["attention_mask"].bool()
    finally:
        handle.remove()
    if len(captured) != len(batches):
        raise PruneError("the first block never ran: is it part of the model's forward?")
    return captured


def _output(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


def _run_block(block: nn.Module, item: BlockInputs) -> torch.Tensor:
    return _output(block(item.hidden, *item.args, **item.kwargs))


def group_stats(block: nn.Module, layers: dict[str, nn.Linear], inputs: Sequence[BlockInputs],
                dense_rows: Mapping[str, Sequence[torch.Tensor]] | None = None) -> dict[str, InputStats]:
    """Input statistics of ``layers`` (inside ``block``) over the real tokens of the calibration ``inputs``;
    with ``dense_rows`` (each layer's real-token inputs in the dense model, item by item, from
    :func:`advance_dense`) also the cross term with them."""
    stats = {name: InputStats(layer.in_features) for name, layer in layers.items()}
    current: list[Any] = [None, 0]  # the token mask and position of the item running

    def collector(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def collect(_module: nn.Module, args: tuple[Any, ...]) -> None:
            dense = dense_rows[name][current[1]] if dense_rows is not None else None
            stats[name].add(args[0][current[0]], dense)
        return collect

    handles = [layer.register_forward_pre_hook(collector(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for position, item in enumerate(inputs):
                current[:] = [item.token_mask, position]
                _run_block(block, item)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def advance_dense(block: nn.Module, inputs: Sequence[BlockInputs]) -> dict[str, list[torch.Tensor]]:
    """Run the (still dense) ``block`` on the dense model's ``inputs``, advancing them, and return every
    ``Linear``'s real-token inputs, item by item (the dense targets of the block's layers)."""
    layers = {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    _advance_observing_inputs(block, layers, inputs, lambda name, x: rows[name].append(x))
    return rows


#: Per-method options that beat the plain method on STS-B dev with MiniLM-L6 (benchmarks/minilm_stsb.py):
#: SparseGPT with dense targets. Others run as published.
RECOMMENDED_OPTIONS = {"sparsegpt": LayerwiseOptions(dense_targets=True)}


def recommended_options(method: str) -> LayerwiseOptions:
    """The options a workflow uses for ``method`` unless told otherwise (:data:`RECOMMENDED_OPTIONS`)."""
    return RECOMMENDED_OPTIONS.get(method, LayerwiseOptions())


def options_record(options: LayerwiseOptions) -> dict[str, Any]:
    """``options`` as JSON-friendly values (for a run report)."""
    return {**asdict(options), "method_options": dict(options.method_options)}


def block_targets(model: nn.Module, blocks: Sequence[nn.Module], batches: Sequence[dict[str, torch.Tensor]],
                  target: SparsityTarget, allocation: str = "uniform",
                  options: AllocationOptions | None = None) -> list[SparsityTarget]:
    """One target per block: ``target`` everywhere (uniform, N:M), or the sparsities of ``allocation``
    from the dense blocks' Wanda scores on the calibration ``batches``."""
    allocate = SPARSITY_ALLOCATIONS.get(allocation)
    if allocation == "uniform" or target.n_m is not None:
        return [target] * len(blocks)
    scores = dense_wanda_scores(blocks, capture_block_inputs(model, blocks[0], batches))
    sparsities = allocate(scores, target.fraction, options or AllocationOptions())
    return [SparsityTarget(sparsity=sparsity) for sparsity in sparsities]


def dense_wanda_scores(blocks: Sequence[nn.Module], inputs: Sequence[BlockInputs]) -> list[list[torch.Tensor]]:
    """``|W_ij| * ||X_j||_2`` of every ``Linear`` of every block, the ``inputs`` running through the dense
    blocks (their hidden states are advanced in place)."""
    scores = []
    for block in blocks:
        layers = {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}
        norms = advance_with_input_norms(block, layers, inputs)
        scores.append([layer.weight.detach().abs() * norms[name].sqrt().to(layer.weight.dtype).unsqueeze(0)
                       for name, layer in layers.items()])
    return scores


def advance_with_input_norms(block: nn.Module, layers: dict[str, nn.Linear],
                             inputs: Sequence[BlockInputs]) -> dict[str, torch.Tensor]:
    """Run ``block`` on ``inputs`` (replacing their hidden states by its outputs) and return ``||X_j||^2`` of
    every layer's input features over the real tokens."""
    norms = {name: torch.zeros(layer.in_features, dtype=torch.float64) for name, layer in layers.items()}
    def collect(name: str, x: torch.Tensor) -> None:
        norms[name] += x.to(torch.float64).pow(2).sum(0)

    _advance_observing_inputs(block, layers, inputs, collect)
    return norms


def _advance_observing_inputs(block: nn.Module, layers: dict[str, nn.Linear], inputs: Sequence[BlockInputs],
                              observe: Callable[[str, torch.Tensor], None]) -> None:
    """Run ``block`` on ``inputs`` (replacing their hidden states by its outputs), calling ``observe(name, x)``
    with every layer's input rows at the real tokens."""
    token_mask: list[torch.Tensor] = []

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def call(_module: nn.Module, args: tuple[Any, ...]) -> None:  # returns None: the input stays as is
            observe(name, args[0][token_mask[0]])
        return call

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for item in inputs:
                token_mask[:] = [item.token_mask]
                item.hidden = _run_block(block, item).detach()
    finally:
        for handle in handles:
            handle.remove()


def prune_blocks(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    batches: Sequence[dict[str, torch.Tensor]],
    method: str,
    target: SparsityTarget,
    prefix: str = "",
    options: LayerwiseOptions | None = None,
) -> list[LayerReport]:
    """Prune every ``Linear`` in ``blocks`` in place with ``method``, block by block, on calibration ``batches``.

    Args:
        model: the whole model; ``model(**batch)`` must run ``blocks[0]`` first among the blocks.
        blocks: the blocks in forward order (e.g. ``model.encoder.layer``); each maps hidden states
            (its first argument) to hidden states (its output or its output's first element).
        batches: tokenized calibration batches with an ``attention_mask``.
        method: a name from :data:`LAYERWISE_METHODS`.
        target: the overall sparsity, or the N:M pattern of every layer.
        prefix: prepended to layer names in the report (e.g. ``encoder.layer.``).
        options: allocation across blocks, method keywords, dense targets (:class:`LayerwiseOptions`).

    Returns:
        One :class:`LayerReport` per pruned layer, in pruning order.
    """
    options = options or LayerwiseOptions()
    prune = LAYERWISE_METHODS.get(method)
    if not batches:
        raise ConfigError("layer-wise pruning needs at least one calibration batch")
    targets = block_targets(model, blocks, batches, target, options.allocation, options.allocation_options)
    prune = _with_options(method, prune, options.method_options)
    if method in DATA_FREE_METHODS:
        return _prune_without_data(blocks, prune, targets, prefix)
    inputs = capture_block_inputs(model, blocks[0], batches)
    dense_inputs = [copy.copy(item) for item in inputs] if options.dense_targets else None
    reports: list[LayerReport] = []
    for index, (block, block_target) in enumerate(zip(blocks, targets)):
        dense_rows = advance_dense(block, dense_inputs) if dense_inputs is not None else None
        modules = dict(block.named_modules())
        for group in linear_groups(block, partial(_run_block, block, inputs[0])):
            stats = group_stats(block, {name: modules[name] for name in group}, inputs, dense_rows)
            for name in group:
                layer = modules[name]
                before = layer.weight.data.clone()
                after = prune(before, stats[name], block_target)
                layer.weight.data.copy_(after)
                if options.bias_correction and layer.bias is not None:
                    layer.bias.data += stats[name].bias_shift(before, after).to(layer.bias.dtype)
                reports.append(LayerReport(f"{prefix}{index}.{name}", tuple(before.shape),
                                           float((after == 0).float().mean()),
                                           relative_error(before, after, stats[name]), stats[name].tokens))
        with torch.no_grad():
            for item in inputs:
                item.hidden = _run_block(block, item).detach()
    return reports


def _with_options(method: str, prune: LayerwiseMethod, options: Mapping[str, Any]) -> LayerwiseMethod:
    """``prune`` with ``options`` bound; ConfigError naming the method if it takes no such keywords."""
    try:
        inspect.signature(prune).bind_partial(None, None, None, **options)
    except TypeError as error:
        raise ConfigError(f"method {method!r} does not take the options {sorted(options)}") from error
    return partial(prune, **options)


def _prune_without_data(blocks: Sequence[nn.Module], prune: LayerwiseMethod, targets: Sequence[SparsityTarget],
                        prefix: str) -> list[LayerReport]:
    """A data-free method on every ``Linear`` of ``blocks`` (no relative error: there are no inputs)."""
    reports = []
    for index, (block, target) in enumerate(zip(blocks, targets)):
        for name, layer in block.named_modules():
            if isinstance(layer, nn.Linear):
                after = prune(layer.weight.data, InputStats(0), target)
                layer.weight.data.copy_(after)
                reports.append(LayerReport(f"{prefix}{index}.{name}", tuple(after.shape),
                                           float((after == 0).float().mean()), None, 0))
    return reports


def reached_sparsity(reports: Sequence[LayerReport]) -> float:
    """The parameter-weighted zero fraction over all reported layers (what an allocation must keep equal
    to the overall target)."""
    sizes = [report.shape[0] * report.shape[1] for report in reports]
    return sum(size * report.sparsity for size, report in zip(sizes, reports)) / max(sum(sizes), 1)


def report_rows(reports: Sequence[LayerReport]) -> list[dict[str, Any]]:
    """The per-layer report as JSON-friendly dicts."""
    return [{**asdict(report), "shape": list(report.shape)} for report in reports]
