"""Pick dense ``F.linear`` or ``torch.sparse`` CSR for a layer on CPU by timing both.

Whether CSR beats a dense GEMM on CPU depends on shape, sparsity, batch,
dtype and thread count in ways no simple rule captures, so
:func:`choose_cpu_backend` runs a tiny timed probe on a random weight of the
layer's shape and sparsity and caches the winner per
``(out, in, sparsity rounded to 0.05, batch, dtype, threads)``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metaprune.errors import KernelError

CPU_BACKENDS = ("dense", "csr")
#: MKL's sparse CSR GEMM on CPU only supports these dtypes.
CSR_CPU_DTYPES = (torch.float32, torch.float64)

_probe_cache: dict[tuple, str] = {}


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_sparse_weight(out_features: int, in_features: int, sparsity: float, dtype: torch.dtype, seed: int = 0):
    """A seeded random ``[out, in]`` weight with a ``sparsity`` fraction of exact zeros (unstructured)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator, dtype=torch.float32)
    weight[torch.rand(out_features, in_features, generator=generator) < sparsity] = 0
    return weight.to(dtype)


def measure_cpu_backends(
    out_features: int, in_features: int, sparsity: float, batch: int = 8,
    dtype: torch.dtype = torch.float32, repeats: int = 5,
) -> dict[str, float]:
    """Median seconds of ``y = x W^T`` with dense ``F.linear`` and with CSR ``torch.sparse.mm``."""
    if not 0.0 <= sparsity <= 1.0:
        raise KernelError(f"sparsity must be in [0, 1], got {sparsity}")
    if min(out_features, in_features, batch, repeats) < 1:
        raise KernelError("out_features, in_features, batch and repeats must all be >= 1")
    if dtype not in CSR_CPU_DTYPES:
        raise KernelError(f"CPU CSR matmul supports {CSR_CPU_DTYPES}, not {dtype}")
    weight = random_sparse_weight(out_features, in_features, sparsity, dtype)
    weight_csr = weight.to_sparse_csr()
    x = torch.randn(batch, in_features, generator=torch.Generator().manual_seed(1)).to(dtype)
    x_t = x.T.contiguous()
    return {
        "dense": median_seconds(lambda: F.linear(x, weight), repeats),
        "csr": median_seconds(lambda: torch.sparse.mm(weight_csr, x_t), repeats),
    }


def choose_cpu_backend(
    out_features: int, in_features: int, sparsity: float, batch: int = 8, dtype: torch.dtype = torch.float32,
) -> str:
    """``"dense"`` or ``"csr"``, whichever the cached probe measured faster (always dense for half dtypes)."""
    if dtype not in CSR_CPU_DTYPES:
        return "dense"
    key = (out_features, in_features, round(sparsity * 20) / 20, batch, dtype, torch.get_num_threads())
    if key not in _probe_cache:
        timings = measure_cpu_backends(out_features, in_features, key[2], batch, dtype)
        _probe_cache[key] = min(timings, key=timings.get)
    return _probe_cache[key]


def clear_probe_cache() -> None:
    """Forget every measured choice (e.g. after changing the thread count deliberately)."""
    _probe_cache.clear()
