"""Sparse weight formats, kernels and ``SparseLinear`` for running pruned models fast.

* :mod:`.formats` (all its public names are re-exported here): ``BitmapWeight``
  (1x64 tiles + 64-bit masks), ``NMWeight`` (N:M such as 2:4, with :func:`prune_to_n_m`),
  ``BSRWeight``, ``CSRWeight``, ``DenseWeight``; exact ``from_dense`` / ``to_dense`` round trips.
* :mod:`.reference`: plain PyTorch ``y = x W^T`` for every format.
* :mod:`.triton_bitmap`, :mod:`.triton_nm`: Triton kernels (CUDA, or CPU with
  ``TRITON_INTERPRET=1``); :mod:`.triton_aot`: compile them for a GPU
  architecture without a GPU; :mod:`.cuda_bitmap`: CUDA C++ batch-1 SpMV.
* :class:`SparseLinear` and :func:`sparsify` swap masked ``nn.Linear`` layers.

Activations are ``[batch, in_features]`` everywhere. Importing this package
never imports triton: the kernel functions below load their module on first access.
"""

from __future__ import annotations

import importlib

from . import formats
from .cpu_probe import choose_cpu_backend, clear_probe_cache, measure_cpu_backends
from .formats import *  # noqa: F403 (the formats' public names, listed once in formats.__all__)
from .reference import bitmap_spmm_reference, nm_spmm_reference, spmm_reference
from .sparse_linear import SparseLinear, choose_format, effective_weight
from .sparsify import is_pruned, sparsify
from .spmm import spmm

#: Public names that live in modules importing triton or compiling CUDA, loaded on first access.
_LAZY = {
    "bitmap_spmm": ".triton_bitmap",
    "nm_spmm": ".triton_nm",
    "bitmap_spmv_cuda": ".cuda_bitmap",
    "compile_for_cuda": ".triton_aot",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *formats.__all__,
    *_LAZY,
    "SparseLinear",
    "bitmap_spmm_reference",
    "choose_cpu_backend",
    "choose_format",
    "clear_probe_cache",
    "effective_weight",
    "is_pruned",
    "measure_cpu_backends",
    "nm_spmm_reference",
    "sparsify",
    "spmm",
    "spmm_reference",
]
