"""Block-sparse rows (BSR), PyTorch's ``to_sparse_bsr`` layout stored as plain tensors.

Keeping ``crow_indices``, ``col_indices`` and ``values`` (``[blocks, block_rows,
block_cols]``) as ordinary tensors lets modules hold them as buffers and save
them with safetensors; :meth:`BSRWeight.to_torch` rebuilds the
``torch.sparse_bsr`` tensor for ``torch.sparse.mm``.

``W`` is padded with zero rows and columns up to multiples of the block size
(default 16x16) and only blocks with a non-zero are stored;
:meth:`BSRWeight.to_dense` crops the padding again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprune.errors import KernelError

from .base import SparseFormat, check_weight, padded_size


@dataclass
class BSRWeight(SparseFormat):
    """A weight as non-zero ``blocksize`` blocks in compressed-row order."""

    name = "bsr"
    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_dense(cls, weight: torch.Tensor, block_rows: int = 16, block_cols: int = 16) -> BSRWeight:
        """Encode ``weight`` with ``block_rows x block_cols`` blocks (zero-padded to whole blocks)."""
        check_weight(weight)
        if block_rows < 1 or block_cols < 1:
            raise KernelError(f"block size must be positive, got {block_rows}x{block_cols}")
        out_features, in_features = weight.shape
        padded = F.pad(
            weight,
            (0, padded_size(in_features, block_cols) - in_features, 0, padded_size(out_features, block_rows) - out_features),
        )
        bsr = padded.to_sparse_bsr((block_rows, block_cols))
        return cls((out_features, in_features), bsr.crow_indices(), bsr.col_indices(), bsr.values())

    @property
    def blocksize(self) -> tuple[int, int]:
        """``(block_rows, block_cols)``."""
        return tuple(self.values.shape[1:])

    def to_torch(self) -> torch.Tensor:
        """The padded ``torch.sparse_bsr`` tensor."""
        block_rows, block_cols = self.blocksize
        padded_shape = (padded_size(self.shape[0], block_rows), padded_size(self.shape[1], block_cols))
        return torch.sparse_bsr_tensor(self.crow_indices, self.col_indices, self.values, padded_shape, check_invariants=False)

    def to_dense(self) -> torch.Tensor:
        """Decode and crop the padding."""
        return self.to_torch().to_dense()[: self.shape[0], : self.shape[1]]
