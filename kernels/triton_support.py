"""What the Triton kernels share: when they can run, how a launch is shaped, and tile helpers.

Every kernel computes ``y = x W^T`` with ``x`` ``[batch, in_features]`` and a
``[BLOCK_OUT, BLOCK_BATCH]`` float32 accumulator per program: it rebuilds a
dense ``[BLOCK_OUT, BLOCK_K]`` weight tile from its format, loads the matching
``[BLOCK_K, BLOCK_BATCH]`` slice of ``x^T`` (:func:`load_x_tile`), multiplies
(:func:`dot_accumulate`) and finally stores (:func:`store_output`).

Split-K: at small batch a 4096-row layer gives only ``4096 / BLOCK_OUT``
programs, too few to keep an H100's 132 SMs streaming weights. The reduction
dimension is therefore cut into ``split_k`` ranges of ``BLOCK_K`` chunks
(:func:`split_range`), each program writes a float32 partial sum, and
:meth:`Launch.finish` adds the partials: ``y = sum_s partial[s]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from metaprune.errors import KernelError

from .formats import SparseFormat
from .reference import check_activations

#: Batch tiles lie in [16, 64]: tl.dot needs at least 16 along each dimension.
MIN_BLOCK_BATCH, MAX_BLOCK_BATCH = 16, 64
#: Programs wanted per streaming multiprocessor when choosing split-K.
PROGRAMS_PER_SM = 4


def require_triton(device: torch.device) -> None:
    """Raise :class:`KernelError` unless Triton can run on ``device``: CUDA, or CPU under ``TRITON_INTERPRET=1``."""
    if device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return
    raise KernelError(
        f"Triton kernels run on CUDA tensors, or on CPU only with TRITON_INTERPRET=1 set before "
        f"triton is imported; got a tensor on {device}. Use the *_reference function instead."
    )


def check_block(name: str, size: int) -> None:
    """Raise :class:`KernelError` unless a tile size is a power of two >= 16 (what ``tl.dot`` accepts)."""
    if size < 16 or size & (size - 1):
        raise KernelError(f"{name} must be a power of two >= 16, got {size}")


def default_split_k(programs: int, num_chunks: int, device: torch.device) -> int:
    """Enough reduction splits for ``PROGRAMS_PER_SM`` programs per SM (1 off CUDA), at most one per chunk."""
    if device.type != "cuda":
        return 1
    wanted = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(num_chunks, wanted // programs))


@dataclass
class Launch:
    """Validated inputs, the float32 partial-sum buffer and the grid of one SpMM call."""

    x: torch.Tensor
    #: ``[split_k, batch, out_features]`` float32 partial sums, one slab per reduction range.
    partial: torch.Tensor
    grid: tuple[int, int, int]
    block_batch: int
    #: The CPU interpreter miscomputes bfloat16 ``tl.dot``, so operands are upcast there.
    upcast_dot: bool

    def finish(self) -> torch.Tensor:
        """``y = sum_s partial[s]`` in the activations' dtype."""
        return self.partial.sum(0).to(self.x.dtype)


def prepare_launch(
    weight: SparseFormat, x: torch.Tensor, block_out: int, num_chunks: int, split_k: int | None
) -> Launch:
    """Check the inputs and size the grid: ``block_out`` output rows, up to 64 batch rows, one split each.

    ``num_chunks`` is how many ``BLOCK_K`` steps the reduction takes; ``split_k=None`` picks
    :func:`default_split_k`.
    """
    check_activations(weight, x)
    require_triton(x.device)
    check_block("block_out", block_out)
    batch, out_features = x.shape[0], weight.shape[0]
    block_batch = min(MAX_BLOCK_BATCH, max(MIN_BLOCK_BATCH, triton.next_power_of_2(batch)))
    grid = (triton.cdiv(out_features, block_out), triton.cdiv(batch, block_batch))
    if split_k is None:
        split_k = default_split_k(grid[0] * grid[1], num_chunks, x.device)
    if not 1 <= split_k <= max(num_chunks, 1):
        raise KernelError(f"split_k must be between 1 and the {num_chunks} reduction chunks, got {split_k}")
    return Launch(
        x=x.contiguous(),
        partial=torch.empty(split_k, batch, out_features, dtype=torch.float32, device=x.device),
        grid=(*grid, split_k),
        block_batch=block_batch,
        upcast_dot=x.device.type == "cpu" and x.dtype == torch.bfloat16,
    )


@triton.jit
def split_range(num_chunks):
    """The ``[first, last)`` reduction chunks of this program's split (``program_id(2)``)."""
    chunks_per_split = tl.cdiv(num_chunks, tl.num_programs(2))
    first = tl.program_id(2) * chunks_per_split
    return first, tl.minimum(first + chunks_per_split, num_chunks)


@triton.jit
def load_x_tile(x_ptr, k, cols, in_features, batch, stride_x_batch):
    """``x^T[k, cols]`` as a ``[len(k), len(cols)]`` tile, zero outside the matrix."""
    mask = (k[:, None] < in_features) & (cols[None, :] < batch)
    return tl.load(x_ptr + cols[None, :] * stride_x_batch + k[:, None], mask=mask, other=0.0)


@triton.jit
def dot_accumulate(acc, weight, x_tile, UPCAST_DOT: tl.constexpr):
    """``acc + weight @ x_tile`` in float32 accumulation."""
    if UPCAST_DOT:
        return tl.dot(weight.to(tl.float32), x_tile.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(weight, x_tile, acc, input_precision="ieee")


@triton.jit
def store_output(partial_ptr, acc, rows, cols, out_features, batch):
    """Write ``acc[rows, cols]`` to ``partial[split, cols, rows]`` (contiguous ``[split, batch, out]``)."""
    mask = (rows[:, None] < out_features) & (cols[None, :] < batch)
    offsets = tl.program_id(2) * batch * out_features + cols[None, :] * out_features + rows[:, None]
    tl.store(partial_ptr + offsets, acc, mask=mask)
