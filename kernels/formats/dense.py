"""The trivial format: the dense weight itself, so every layer choice shares one protocol."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SparseFormat, check_weight


@dataclass
class DenseWeight(SparseFormat):
    """A dense ``[out, in]`` weight (the baseline that sparse formats must beat)."""

    name = "dense"
    values: torch.Tensor

    @classmethod
    def from_dense(cls, weight: torch.Tensor) -> DenseWeight:
        """Wrap (a contiguous version of) ``weight``."""
        check_weight(weight)
        return cls(tuple(weight.shape), weight.contiguous())

    def to_dense(self) -> torch.Tensor:
        """The stored weight."""
        return self.values
