"""The CUDA C++ batch-1 bitmap SpMV (``csrc/bitmap_spmv.cu``), built lazily on first use.

``torch.utils.cpp_extension.load`` compiles the extension with the installed
``nvcc`` the first time :func:`bitmap_spmv_cuda` runs on a CUDA tensor (cached
by PyTorch under ``TORCH_EXTENSIONS_DIR``); importing this module compiles
nothing. Reference: :func:`metaprune.kernels.reference.bitmap_spmm_reference`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import torch

from metaprune.errors import KernelError

from .formats import BitmapWeight
from .reference import check_activations

SOURCE_DIR = Path(__file__).parent / "csrc"
SOURCES = (SOURCE_DIR / "bitmap_spmv.cpp", SOURCE_DIR / "bitmap_spmv.cu")


@functools.cache
def load_extension() -> ModuleType:
    """Compile (once per process, cached on disk by PyTorch) and import the extension."""
    if not torch.cuda.is_available():
        raise KernelError("the CUDA bitmap SpMV needs a CUDA build of PyTorch and a GPU; use bitmap_spmm_reference")
    from torch.utils.cpp_extension import load

    return load(name="metaprune_bitmap_spmv", sources=[str(path) for path in SOURCES], verbose=False)


def bitmap_spmv_cuda(weight: BitmapWeight, x: torch.Tensor) -> torch.Tensor:
    """``y = x W^T`` for a single activation row ``x`` of shape ``[1, in_features]``; returns ``[1, out_features]``."""
    check_activations(weight, x)
    if x.device.type != "cuda":
        raise KernelError(f"bitmap_spmv_cuda needs CUDA tensors, got {x.device}")
    if x.shape[0] != 1:
        raise KernelError(f"bitmap_spmv_cuda handles batch 1 only, got batch {x.shape[0]}; use bitmap_spmm")
    y = load_extension().bitmap_spmv(x[0].contiguous(), weight.bitmaps, weight.tile_offsets, weight.values)
    return y.unsqueeze(0)
