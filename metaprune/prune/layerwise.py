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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from metaprune.errors import ConfigError, PruneError
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
    """Running ``H = sum_t x_t x_t^T`` (float64) and token count of one layer's input."""

    def __init__(self, features: int) -> None:
        self.hessian = torch.zeros(features, features, dtype=torch.float64)
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add ``T x features`` input rows."""
        rows = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        self.hessian += rows.T @ rows
        self.tokens += rows.shape[0]

    @property
    def squared_norms(self) -> torch.Tensor:
        """``||X_j||^2`` of every input feature ``j`` (the diagonal of ``H``)."""
        return torch.diagonal(self.hessian).clone()


#: A layer-wise method: ``prune(weight, stats, target) -> sparse weight`` (same shape, a new tensor).
LayerwiseMethod = Callable[[torch.Tensor, InputStats, SparsityTarget], torch.Tensor]
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


def group_stats(block: nn.Module, layers: dict[str, nn.Linear], inputs: Sequence[BlockInputs]) -> dict[str, InputStats]:
    """Input statistics of ``layers`` (inside ``block``) over the real tokens of the calibration ``inputs``."""
    stats = {name: InputStats(layer.in_features) for name, layer in layers.items()}
    token_mask: list[torch.Tensor] = []

    def collector(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda _module, args: stats[name].add(args[0][token_mask[0]])

    handles = [layer.register_forward_pre_hook(collector(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for item in inputs:
                token_mask[:] = [item.token_mask]
                _run_block(block, item)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def prune_blocks(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    batches: Sequence[dict[str, torch.Tensor]],
    method: str,
    target: SparsityTarget,
    prefix: str = "",
) -> list[LayerReport]:
    """Prune every ``Linear`` in ``blocks`` in place with ``method``, block by block, on calibration ``batches``.

    Args:
        model: the whole model; ``model(**batch)`` must run ``blocks[0]`` first among the blocks.
        blocks: the blocks in forward order (e.g. ``model.encoder.layer``); each maps hidden states
            (its first argument) to hidden states (its output or its output's first element).
        batches: tokenized calibration batches with an ``attention_mask``.
        method: a name from :data:`LAYERWISE_METHODS`.
        target: the sparsity or N:M pattern of every layer.
        prefix: prepended to layer names in the report (e.g. ``encoder.layer.``).

    Returns:
        One :class:`LayerReport` per pruned layer, in pruning order.
    """
    prune = LAYERWISE_METHODS.get(method)
    if not batches:
        raise ConfigError("layer-wise pruning needs at least one calibration batch")
    if method in DATA_FREE_METHODS:
        return _prune_without_data(blocks, prune, target, prefix)
    inputs = capture_block_inputs(model, blocks[0], batches)
    reports: list[LayerReport] = []
    for index, block in enumerate(blocks):
        modules = dict(block.named_modules())
        for group in linear_groups(block, partial(_run_block, block, inputs[0])):
            stats = group_stats(block, {name: modules[name] for name in group}, inputs)
            for name in group:
                layer = modules[name]
                before = layer.weight.data.clone()
                after = prune(before, stats[name], target)
                layer.weight.data.copy_(after)
                reports.append(LayerReport(f"{prefix}{index}.{name}", tuple(before.shape),
                                           float((after == 0).float().mean()),
                                           relative_error(before, after, stats[name]), stats[name].tokens))
        with torch.no_grad():
            for item in inputs:
                item.hidden = _run_block(block, item).detach()
    return reports


def _prune_without_data(blocks: Sequence[nn.Module], prune: LayerwiseMethod, target: SparsityTarget,
                        prefix: str) -> list[LayerReport]:
    """A data-free method on every ``Linear`` of ``blocks`` (no relative error: there are no inputs)."""
    reports = []
    for index, block in enumerate(blocks):
        for name, layer in block.named_modules():
            if isinstance(layer, nn.Linear):
                after = prune(layer.weight.data, InputStats(0), target)
                layer.weight.data.copy_(after)
                reports.append(LayerReport(f"{prefix}{index}.{name}", tuple(after.shape),
                                           float((after == 0).float().mean()), None, 0))
    return reports


def report_rows(reports: Sequence[LayerReport]) -> list[dict[str, Any]]:
    """The per-layer report as JSON-friendly dicts."""
    return [{**asdict(report), "shape": list(report.shape)} for report in reports]
