"""Triton SpMM for the bitmap format: ``y = x W^T`` with ``W`` a :class:`BitmapWeight`.

Each program owns ``BLOCK_OUT`` output features and ``BLOCK_BATCH`` batch rows
and walks the row's 64-wide tiles. For a tile it unpacks the 64 mask bits
``b_j``, gives every set bit its rank among the set bits before it,
``rank_j = sum_{i<j} b_i`` (an exclusive cumulative sum, which needs no
popcount instruction and so also runs in the Triton interpreter), gathers
``values[tile_offset + rank_j]`` into a dense ``[BLOCK_OUT, 64]`` register tile
and multiplies it with the matching ``[64, BLOCK_BATCH]`` slice of ``x^T`` on
the tensor cores, accumulating in float32 (split over the reduction at small
batch, see :mod:`.triton_support`). Weight bytes read are those of the
format (:attr:`BitmapWeight.nbytes`), which is where the speed-up at small
batch comes from. Reference: :func:`metaprune.kernels.reference.bitmap_spmm_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .formats import BitmapWeight
from .formats.bitmap import TILE
from .triton_support import dot_accumulate, load_x_tile, prepare_launch, split_range, store_output


@triton.jit
def _bitmap_spmm_kernel(
    x_ptr, bitmaps_ptr, offsets_ptr, values_ptr, partial_ptr,
    batch, out_features, in_features, num_tiles, stride_x_batch,
    TILE_WIDTH: tl.constexpr, BLOCK_OUT: tl.constexpr, BLOCK_BATCH: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    cols = tl.program_id(1) * BLOCK_BATCH + tl.arange(0, BLOCK_BATCH)
    lanes = tl.arange(0, TILE_WIDTH)
    row_ok = rows < out_features
    acc = tl.zeros((BLOCK_OUT, BLOCK_BATCH), dtype=tl.float32)
    first_tile, last_tile = split_range(num_tiles)
    for tile in range(first_tile, last_tile):
        bitmap = tl.load(bitmaps_ptr + rows * num_tiles + tile, mask=row_ok, other=0)
        offset = tl.load(offsets_ptr + rows * num_tiles + tile, mask=row_ok, other=0)
        bits = ((bitmap[:, None] >> lanes[None, :]) & 1).to(tl.int32)
        rank = tl.cumsum(bits, axis=1) - bits
        weight = tl.load(values_ptr + offset[:, None] + rank, mask=bits != 0, other=0.0)
        x_tile = load_x_tile(x_ptr, tile * TILE_WIDTH + lanes, cols, in_features, batch, stride_x_batch)
        acc = dot_accumulate(acc, weight, x_tile, UPCAST_DOT)
    store_output(partial_ptr, acc, rows, cols, out_features, batch)


def bitmap_spmm(
    weight: BitmapWeight, x: torch.Tensor, block_out: int = 64, split_k: int | None = None
) -> torch.Tensor:
    """``y = x W^T`` for ``x`` of shape ``[batch, in_features]``; returns ``[batch, out_features]``.

    Tuned for batch 1..64 (larger batches tile over the batch too). Runs on CUDA,
    or on CPU under ``TRITON_INTERPRET=1``; raises :class:`KernelError` otherwise
    or on mismatched shapes, dtypes or devices. ``block_out`` must be a power of two
    >= 16; ``split_k`` (1..tiles per row, default: enough to fill the GPU) splits the
    reduction across programs.
    """
    launch = prepare_launch(weight, x, block_out, weight.num_tiles, split_k)
    _bitmap_spmm_kernel[launch.grid](
        launch.x, weight.bitmaps, weight.tile_offsets, weight.values, launch.partial,
        x.shape[0], *weight.shape, weight.num_tiles, launch.x.stride(0),
        TILE_WIDTH=TILE, BLOCK_OUT=block_out, BLOCK_BATCH=launch.block_batch, UPCAST_DOT=launch.upcast_dot,
    )
    return launch.finish()
