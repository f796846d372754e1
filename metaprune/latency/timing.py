"""Wall-clock latency of one forward pass in a runtime: eager PyTorch or ONNX Runtime, on the CPU.

Every figure of :mod:`metaprune.latency` comes from :func:`median_ms`: ``warmup`` untimed calls,
then the median of ``repeats`` timed ones, in this process, with the intra-op thread count fixed.
A :class:`Runtime` turns a module and its input into a zero-argument callable, so the profiler,
the predictor's calibration and the end-of-job check all time the same thing the same way.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.inputs import ExampleInputs, run_model

RUNTIMES = ("torch", "onnxruntime")
#: How the timed calls of one measurement reduce to one figure: the median or the minimum of their wall time,
#: or ``cpu``, the median CPU time this process spent per call. On a machine shared with other jobs the wall
#: clock measures the scheduler as much as the model; CPU time does not count the time the process waits,
#: so it is the steady figure there (for one thread only: with more it adds the threads' times up).
STATISTICS = ("median", "min", "cpu")


@lru_cache(maxsize=1)
def hardware_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def runtime_version(runtime: str) -> str:
    """The version string that keys a table: torch's, plus onnxruntime's for that runtime."""
    if runtime == "onnxruntime":
        import onnxruntime

        return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def check_runtime(runtime: str, device: str = "cpu") -> None:
    """ConfigError unless ``runtime`` is known and ``device`` is the CPU (the only one profiled so far)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if device != "cpu":
        raise ConfigError(f"--device {device}: latency tables are measured on the CPU only (--device cpu)")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous count."""
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def forward_callable(model: nn.Module, example_inputs: ExampleInputs, runtime: str = "torch",
                     threads: int = 1) -> Callable[[], object]:
    """A zero-argument callable that runs one inference of ``model`` (eval mode, no grad) in ``runtime``.

    For ONNX Runtime the model is exported once (:func:`metaprune.export.to_onnx_bytes`) and the
    session gets ``threads`` intra-op threads; for PyTorch the caller fixes the threads
    (:func:`torch_threads`).
    """
    check_runtime(runtime)
    model.eval()
    if runtime == "onnxruntime":
        from metaprune.export import onnx_session, session_feed, to_onnx_bytes

        session = onnx_session(to_onnx_bytes(model, example_inputs)[0], threads)
        feed = session_feed(session, example_inputs)
        return lambda: session.run(None, feed)

    def run() -> object:
        with torch.inference_mode():
            return run_model(model, example_inputs)

    return run


def check_statistic(statistic: str) -> None:
    """ConfigError unless ``statistic`` is one of :data:`STATISTICS`."""
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")


def median_ms(function: Callable[[], object], *, warmup: int = 3, repeats: int = 15,
              statistic: str = "median") -> float:
    """Median (or minimum) wall time, or median CPU time, of ``function()`` in ms after ``warmup`` untimed calls."""
    check_statistic(statistic)
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        function()
    clock = time.process_time if statistic == "cpu" else time.perf_counter
    timings = []
    for _ in range(repeats):
        start = clock()
        function()
        timings.append((clock() - start) * 1e3)
    return min(timings) if statistic == "min" else statistics.median(timings)


def measure_ms(model: nn.Module, example_inputs: ExampleInputs, *, runtime: str = "torch", threads: int = 1,
               warmup: int = 5, repeats: int = 21, statistic: str = "median") -> float:
    """Median (or minimum) latency in ms of ``model`` on ``example_inputs`` in ``runtime`` with ``threads`` threads."""
    with torch_threads(threads):
        return median_ms(forward_callable(model, example_inputs, runtime, threads), warmup=warmup, repeats=repeats,
                         statistic=statistic)
