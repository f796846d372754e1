"""Compile the Triton kernels ahead of time for a CUDA architecture, without a GPU.

``triton.compile`` lowers a kernel through TTIR, TTGIR, LLVM IR and PTX to a
cubin with the ``ptxas`` bundled in the triton wheel, so a CPU-only machine can
check that the kernels really build for, say, Hopper (``sm_90``), beyond what
the interpreter exercises. The kernels must be real JIT functions: run this in a
process where ``TRITON_INTERPRET`` is unset.
"""

from __future__ import annotations

import os

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from metaprune.errors import KernelError

from .formats.bitmap import TILE

#: Triton's names for the weight dtypes the kernels support.
TRITON_DTYPES = ("fp16", "bf16", "fp32")


def kernel_sources(dtype: str, block_out: int = 64, block_batch: int = 16) -> dict[str, ASTSource]:
    """The bitmap and 2:4 kernels specialised for ``dtype`` (``fp16``, ``bf16`` or ``fp32``)."""
    from .triton_bitmap import _bitmap_spmm_kernel
    from .triton_nm import _nm_spmm_kernel

    if dtype not in TRITON_DTYPES:
        raise KernelError(f"dtype must be one of {TRITON_DTYPES}, got {dtype!r}")
    sizes = dict.fromkeys(("batch", "out_features", "in_features", "stride_x_batch"), "i32")
    blocks = {"BLOCK_OUT": block_out, "BLOCK_BATCH": block_batch, "UPCAST_DOT": False}
    bitmap_signature = {
        "x_ptr": f"*{dtype}", "bitmaps_ptr": "*i64", "offsets_ptr": "*i32", "values_ptr": f"*{dtype}",
        "partial_ptr": "*fp32", "batch": "i32", "out_features": "i32", "in_features": "i32", "num_tiles": "i32",
        "stride_x_batch": "i32",
    }
    nm_signature = {
        "x_ptr": f"*{dtype}", "values_ptr": f"*{dtype}", "indices_ptr": "*u8", "partial_ptr": "*fp32", **sizes,
    }
    bitmap_constants = {"TILE_WIDTH": TILE, **blocks}
    nm_constants = {"N": 2, "M": 4, "BLOCK_K": 64, **blocks}
    return {
        "bitmap": ASTSource(_bitmap_spmm_kernel, {**bitmap_signature, **dict.fromkeys(bitmap_constants, "constexpr")},
                            bitmap_constants),
        "nm_2:4": ASTSource(_nm_spmm_kernel, {**nm_signature, **dict.fromkeys(nm_constants, "constexpr")},
                            nm_constants),
    }


def compile_for_cuda(arch: int = 90, dtypes: tuple[str, ...] = TRITON_DTYPES) -> dict[str, int]:
    """Compile every kernel for ``sm_<arch>``; returns ``"<kernel>/<dtype>"`` → cubin size in bytes."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise KernelError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    target = GPUTarget("cuda", arch, 32)
    return {
        f"{name}/{dtype}": len(triton.compile(source, target=target).asm["cubin"])
        for dtype in dtypes
        for name, source in kernel_sources(dtype).items()
    }
