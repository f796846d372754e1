"""The one cost model of metaprune: FLOPs, parameters and measured CPU latency.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a
multiply-accumulate as two FLOPs (so ``MACs = FLOPs / 2``) and counts matrix products,
convolutions and attention; element-wise work (activations, BN at inference, adds) is
not counted. Every figure in a :class:`~metaprune.prune.report.PruneReport` and every
budget check uses these functions.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from metaprune.errors import ConfigError
from metaprune.inputs import ExampleInputs, check_example_inputs, run_model

__all__ = [
    "LatencyStats",
    "count_flops",
    "count_params",
    "count_nonzero_params",
    "effective_flops",
    "flops_by_module",
    "measure_latency",
]


# PyTorch's counter misses the CPU kernel of scaled_dot_product_attention; count it like the
# CUDA kernels (q @ k^T and attention @ v) so CPU and GPU FLOPs agree.
def _cpu_attention_flops(query_shape, key_shape, value_shape, *_args, out_shape=None, **_kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_attention_flops(query_shape, key_shape, value_shape, embed_dim, *_args, out_shape=None, **_kwargs) -> int:
    r"""FLOPs of ``nn.MultiheadAttention``'s fused inference kernel, which PyTorch's counter skips.

    With query ``[B, L, E]`` and key/value ``[B, S, E]``: the q, k, v and output projections
    (:math:`2BE^2(2L + 2S)`) and the two attention products (:math:`4BLSE`), the same FLOPs
    as the unfused path that training takes.
    """
    *batch, length, _ = query_shape
    source = key_shape[-2]
    batches = 1
    for size in batch:
        batches *= size
    return 2 * batches * embed_dim * embed_dim * (2 * length + 2 * source) + 4 * batches * length * source * embed_dim


def _recurrent_layer_flops(input_shape, input_weights, hidden_weights, *_args, out_shape=None, **_kwargs) -> int:
    """FLOPs of one layer and direction of ``nn.LSTM`` on the CPU (oneDNN's kernel, which the counter
    skips): the input-to-hidden and hidden-to-hidden matrices once per time step (2 FLOPs per MAC)."""
    steps = 1
    for size in input_shape[:-1]:
        steps *= size
    return 2 * steps * (input_weights[0] * input_weights[1] + hidden_weights[0] * hidden_weights[1])


_CPU_ATTENTION = {
    torch.ops.aten.mkldnn_rnn_layer: _recurrent_layer_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._native_multi_head_attention: _native_attention_flops,
}


def _run_counted(model: nn.Module, example_input: ExampleInputs) -> FlopCounterMode:
    check_example_inputs(example_input)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
            run_model(model, example_input)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: nn.Module, example_input: ExampleInputs) -> int:
    """FLOPs of one forward pass of ``model`` on ``example_input`` (2 FLOPs per MAC)."""
    return int(_run_counted(model, example_input).get_total_flops())


def flops_by_module(model: nn.Module, example_input: ExampleInputs) -> dict[str, int]:
    """FLOPs attributed to each module itself, excluding its children.

    Keys are module names as in ``model.named_modules()`` (``""`` for the root). Work done
    directly inside a container's ``forward`` (e.g. attention's ``q @ k^T``) is
    attributed to that container.
    """
    counts = _run_counted(model, example_input).get_flop_counts()
    root_prefix = type(model).__name__
    totals: dict[str, int] = {}
    for key, per_op in counts.items():
        if key == "Global":
            continue
        name = "" if key == root_prefix else key.removeprefix(root_prefix + ".")
        totals[name] = int(sum(per_op.values()))
    # A module's own FLOPs are its total minus those of its nearest counted descendants; a
    # container that is never called (nn.ModuleList) has no count, so look past it.
    own = dict(totals)
    for name, total in totals.items():
        if name:
            own[_counted_parent(name, totals)] -= total
    return own


def _counted_parent(name: str, totals: dict[str, int]) -> str:
    """The longest proper dotted prefix of ``name`` that has a FLOP count (``""``: the root)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in totals:
            return prefix
    return ""


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (dense count, zeros included)."""
    return sum(parameter.numel() for parameter in model.parameters())


def _effective_weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def count_nonzero_params(model: nn.Module) -> int:
    """Number of non-zero parameter elements, counting masked weights as pruned.

    Modules pruned with :mod:`torch.nn.utils.prune` keep ``weight_orig`` as a parameter;
    their effective ``weight`` (``weight_orig * weight_mask``) is what is counted.
    """
    total = 0
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if name.endswith("_orig"):
                parameter = getattr(module, name.removesuffix("_orig"))
            total += int(torch.count_nonzero(parameter))
    return total


def _weighted_layer(module: nn.Module) -> bool:
    """Conv/Linear layers (Hugging Face's ``Conv1D`` included): their FLOPs scale with their weight density."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or type(module).__name__ == "Conv1D"


def effective_flops(model: nn.Module, example_input: ExampleInputs) -> int:
    """FLOPs that a sparse kernel would execute: each weighted layer's FLOPs times its weight density.

    Equals :func:`count_flops` for a dense model; used as the cost of unstructured and N:M
    pruning, where shapes do not shrink.
    """
    own = flops_by_module(model, example_input)
    modules = dict(model.named_modules())
    total = 0.0
    for name, flops in own.items():
        weight = _effective_weight(modules[name]) if name in modules else None
        if weight is not None and weight.numel() > 0 and _weighted_layer(modules[name]):
            total += flops * float(torch.count_nonzero(weight)) / weight.numel()
        else:
            total += flops
    return int(round(total))


@dataclass(frozen=True)
class LatencyStats:
    """Measured latency of one forward pass, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int

    def to_dict(self) -> dict[str, float]:
        """Plain-dict form for JSON reports."""
        return asdict(self)


def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    repeats: int = 30,
    warmup: int = 5,
    threads: int = 1,
) -> LatencyStats:
    """Median CPU latency of ``model(example_input)``, timed by :class:`torch.utils.benchmark.Timer`.

    ``warmup`` untimed runs (the Timer adds two of its own), then
    :meth:`~torch.utils.benchmark.Timer.blocked_autorange` for about ``repeats`` runs' worth of
    time, in blocks sized so the timer's overhead is negligible; the median and deciles are
    over the blocks' per-run times and ``repeats`` in the result is the number of timed runs.
    Runs in eval mode under ``torch.no_grad`` with ``threads`` intra-op threads (the Timer sets
    and restores them), so a dense and a pruned model measured in one process compare fairly.
    """
    from torch.utils import benchmark

    if repeats < 1 or warmup < 0 or threads < 1:
        raise ConfigError(f"need repeats >= 1, warmup >= 0, threads >= 1; got {repeats}, {warmup}, {threads}")
    was_training = model.training
    model.eval()
    timer = benchmark.Timer(stmt="model(example_input)", globals={"model": model, "example_input": example_input},
                            num_threads=threads, label=type(model).__name__)
    try:
        with torch.no_grad():
            one_run = timer.timeit(max(1, warmup)).mean  # the warm-up also sizes the measurement
            measurement = timer.blocked_autorange(min_run_time=repeats * one_run)
    finally:
        model.train(was_training)
    times_ms = [seconds * 1e3 for seconds in measurement.times]
    deciles = statistics.quantiles(times_ms, n=10) if len(times_ms) > 1 else times_ms * 9
    return LatencyStats(measurement.median * 1e3, deciles[0], deciles[-1], len(times_ms) * measurement.number_per_run,
                        threads)
