"""Triton SpMM for the N:M format: ``y = x W^T`` with ``W`` an :class:`NMWeight`.

Each program owns ``BLOCK_OUT`` output features and ``BLOCK_BATCH`` batch rows
and walks the inputs in ``BLOCK_K`` chunks. For input column ``k`` (group
``g = k // m``, position ``p = k % m``) the dense weight is rebuilt as
``W[r, k] = sum_s values[r, g n + s] * [indices[r, g n + s] == p]`` over the
``n`` slots (at most one slot matches, since indices in a group are distinct),
then multiplied with the ``[BLOCK_K, BLOCK_BATCH]`` slice of ``x^T`` in float32
accumulation. Any ``n <= m`` works; groups may straddle chunk boundaries.
Reference: :func:`metaprune.kernels.reference.nm_spmm_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .formats import NMWeight
from .triton_support import (
    check_block,
    dot_accumulate,
    load_x_tile,
    prepare_launch,
    split_range,
    store_output,
)


@triton.jit
def _nm_spmm_kernel(
    x_ptr, values_ptr, indices_ptr, partial_ptr,
    batch, out_features, in_features, stride_x_batch,
    N: tl.constexpr, M: tl.constexpr,
    BLOCK_OUT: tl.constexpr, BLOCK_BATCH: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    cols = tl.program_id(1) * BLOCK_BATCH + tl.arange(0, BLOCK_BATCH)
    row_ok = rows < out_features
    slots_per_row = in_features // M * N
    acc = tl.zeros((BLOCK_OUT, BLOCK_BATCH), dtype=tl.float32)
    first_chunk, last_chunk = split_range(tl.cdiv(in_features, BLOCK_K))
    for chunk in range(first_chunk, last_chunk):
        k = chunk * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < in_features
        weight_ok = row_ok[:, None] & k_ok[None, :]
        first_slot = rows[:, None] * slots_per_row + (k // M * N)[None, :]
        position = (k % M)[None, :]
        weight = tl.zeros((BLOCK_OUT, BLOCK_K), dtype=values_ptr.dtype.element_ty)
        for slot in tl.static_range(N):
            index = tl.load(indices_ptr + first_slot + slot, mask=weight_ok, other=0).to(tl.int32)
            value = tl.load(values_ptr + first_slot + slot, mask=weight_ok, other=0.0)
            weight = tl.where(index == position, value, weight)
        x_tile = load_x_tile(x_ptr, k, cols, in_features, batch, stride_x_batch)
        acc = dot_accumulate(acc, weight, x_tile, UPCAST_DOT)
    store_output(partial_ptr, acc, rows, cols, out_features, batch)


def nm_spmm(
    weight: NMWeight, x: torch.Tensor, block_out: int = 64, block_k: int = 64, split_k: int | None = None
) -> torch.Tensor:
    """``y = x W^T`` for ``x`` of shape ``[batch, in_features]``; returns ``[batch, out_features]``.

    Runs on CUDA, or on CPU under ``TRITON_INTERPRET=1``; raises :class:`KernelError`
    otherwise or on mismatched inputs. ``block_out`` and ``block_k`` must be powers of
    two >= 16; ``split_k`` splits the reduction as in :func:`bitmap_spmm`.
    """
    check_block("block_k", block_k)
    launch = prepare_launch(weight, x, block_out, triton.cdiv(weight.shape[1], block_k), split_k)
    _nm_spmm_kernel[launch.grid](
        launch.x, weight.values, weight.indices, launch.partial,
        x.shape[0], *weight.shape, launch.x.stride(0),
        N=weight.n, M=weight.m,
        BLOCK_OUT=block_out, BLOCK_BATCH=launch.block_batch, BLOCK_K=block_k, UPCAST_DOT=launch.upcast_dot,
    )
    return launch.finish()
