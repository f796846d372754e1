"""Compressed sparse rows (CSR), PyTorch's ``to_sparse_csr`` layout stored as plain tensors.

``crow_indices[r] : crow_indices[r + 1]`` index the non-zeros of row ``r`` in
``col_indices`` and ``values``. No padding is needed; on CPU ``torch.sparse.mm``
runs it through MKL (float32/float64 only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SparseFormat, check_weight


@dataclass
class CSRWeight(SparseFormat):
    """A weight in PyTorch's compressed sparse row layout."""

    name = "csr"
    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_dense(cls, weight: torch.Tensor) -> CSRWeight:
        """Encode ``weight`` (explicit zeros are dropped)."""
        check_weight(weight)
        csr = weight.to_sparse_csr()
        return cls(tuple(weight.shape), csr.crow_indices(), csr.col_indices(), csr.values())

    def to_torch(self) -> torch.Tensor:
        """The ``torch.sparse_csr`` tensor."""
        return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values, self.shape, check_invariants=False)

    def to_dense(self) -> torch.Tensor:
        """Decode to a dense tensor."""
        return self.to_torch().to_dense()
