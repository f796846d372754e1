"""Bitmap format: 1x64 tiles along the reduction dimension, one 64-bit mask per tile.

For ``W`` of shape ``[out, in]`` the columns are zero-padded to ``in_pad =
ceil(in / 64) * 64`` and cut into ``T = in_pad / 64`` tiles per row. Tile
``(r, t)`` covers ``W[r, 64 t : 64 t + 64]`` and stores

* ``bitmaps[r, t]`` (int64): bit ``j`` is set iff ``W[r, 64 t + j] != 0``;
* ``tile_offsets[r, t]`` (int32): index in ``values`` of the tile's first
  non-zero, the exclusive prefix sum of tile popcounts in row-major order;
* ``values`` (weight dtype): the non-zeros, row by row, tile by tile, in
  ascending column order.

So ``W[r, 64 t + j] = values[tile_offsets[r, t] + popcount(bitmaps[r, t] & (2^j - 1))]``
when bit ``j`` is set and ``0`` otherwise. A kernel reads ``nnz * itemsize + 12 T * out``
bytes instead of ``in * out * itemsize``. Padding columns are always zero and
are dropped by :meth:`BitmapWeight.to_dense`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprune.errors import KernelError

from .base import SparseFormat, check_weight, padded_size

TILE = 64


def tile_bits(bitmaps: torch.Tensor) -> torch.Tensor:
    """Unpack int64 bitmaps ``[..., T]`` to booleans ``[..., T, 64]`` (bit ``j`` at index ``j``)."""
    shifts = torch.arange(TILE, device=bitmaps.device)
    return ((bitmaps.unsqueeze(-1) >> shifts) & 1).bool()


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack booleans ``[..., 64]`` into int64 bitmaps ``[...]``, the inverse of :func:`tile_bits`."""
    shifts = torch.arange(TILE, device=bits.device)
    weighted = bits.long() << shifts
    # Bits 0..62 sum without overflow; bit 63 is the sign bit and is or-ed in separately.
    return weighted[..., : TILE - 1].sum(-1) | weighted[..., TILE - 1]


@dataclass
class BitmapWeight(SparseFormat):
    """A weight in the 1x64 bitmap format (see the module docstring)."""

    name = "bitmap"
    bitmaps: torch.Tensor
    tile_offsets: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_dense(cls, weight: torch.Tensor) -> BitmapWeight:
        """Encode ``weight``; raises :class:`KernelError` on a bad weight or > 2^31 non-zeros."""
        check_weight(weight)
        out_features, in_features = weight.shape
        padded = F.pad(weight, (0, padded_size(in_features, TILE) - in_features))
        bits = padded.reshape(out_features, -1, TILE) != 0
        counts = bits.sum(-1)
        if counts.sum() >= 2**31:
            raise KernelError("more than 2^31 non-zeros do not fit int32 tile offsets; split the layer")
        offsets = (counts.flatten().cumsum(0) - counts.flatten()).reshape(counts.shape)
        return cls(
            shape=(out_features, in_features),
            bitmaps=pack_bits(bits),
            tile_offsets=offsets.to(torch.int32),
            values=padded[padded != 0].contiguous(),
        )

    def to_dense(self) -> torch.Tensor:
        """Scatter ``values`` back to the set bits and drop the padding columns."""
        out_features, in_features = self.shape
        bits = tile_bits(self.bitmaps).reshape(out_features, -1)
        dense = torch.zeros(bits.shape, dtype=self.values.dtype, device=self.values.device)
        dense[bits] = self.values
        return dense[:, :in_features]

    @property
    def num_tiles(self) -> int:
        """Tiles per row, ``ceil(in_features / 64)``."""
        return self.bitmaps.shape[1]
