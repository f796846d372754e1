"""N:M format: at most ``n`` non-zeros in every group of ``m`` consecutive inputs.

For ``W`` of shape ``[out, in]`` with ``in % m == 0`` there are ``G = in / m``
groups per row. Group ``(r, g)`` keeps ``n`` slots

* ``values[r, g n + s]`` (weight dtype) and
* ``indices[r, g n + s]`` (uint8, ``0 <= index < m``, ascending within a group),

so ``W[r, g m + indices[r, g n + s]] = values[r, g n + s]``. A group with fewer
than ``n`` non-zeros fills its spare slots with zero values at positions it
does not use, so decoding is exact. ``in`` not divisible by ``m`` raises
:class:`KernelError` (an N:M pattern is defined per whole group; pad the layer
first). 2:4 moves ``in * out * (itemsize / 2 + 1 / 2)`` bytes, e.g. 0.75 of dense in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaprune.errors import KernelError

from .base import SparseFormat, check_weight


def check_n_m(in_features: int, n: int, m: int) -> None:
    """Raise :class:`KernelError` unless ``1 <= n <= m <= 256`` and ``m`` divides ``in_features``."""
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n <= m <= 256):
        raise KernelError(f"need integers 1 <= n <= m <= 256 for N:M sparsity, got n={n}, m={m}")
    if in_features % m:
        raise KernelError(f"in_features={in_features} is not a multiple of m={m}; pad the layer or choose another m")


def prune_to_n_m(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude entries in every group of ``m`` along the input dimension.

    Returns a pruned copy of ``weight`` (``[out, in]``, ``in % m == 0``); ties keep the lower index.
    """
    check_weight(weight)
    check_n_m(weight.shape[1], n, m)
    groups = weight.reshape(weight.shape[0], -1, m)
    # A stable sort on -|w| keeps the lower index among equal magnitudes, so the result is deterministic.
    order = torch.sort(-groups.abs(), dim=-1, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return (groups * keep).reshape(weight.shape)


def is_n_m_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` inputs of ``weight`` has at most ``n`` non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % m:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, m) != 0).sum(-1) <= n).all())


@dataclass
class NMWeight(SparseFormat):
    """A weight in the N:M format (see the module docstring)."""

    name = "nm"
    values: torch.Tensor
    indices: torch.Tensor
    n: int
    m: int

    @classmethod
    def from_dense(cls, weight: torch.Tensor, n: int = 2, m: int = 4) -> NMWeight:
        """Encode an N:M-sparse ``weight``; raises :class:`KernelError` if a group has more than ``n`` non-zeros."""
        check_weight(weight)
        check_n_m(weight.shape[1], n, m)
        if not is_n_m_sparse(weight, n, m):
            raise KernelError(f"weight has groups with more than {n} non-zeros out of {m}; call prune_to_n_m first")
        out_features = weight.shape[0]
        groups = weight.reshape(out_features, -1, m)
        # Non-zeros first (stable, so in column order), then zero positions fill the spare slots.
        slots = torch.sort((groups == 0).to(torch.uint8), dim=-1, stable=True).indices[..., :n]
        slots = slots.sort(dim=-1).values
        return cls(
            shape=tuple(weight.shape),
            values=groups.gather(-1, slots).reshape(out_features, -1).contiguous(),
            indices=slots.to(torch.uint8).reshape(out_features, -1).contiguous(),
            n=n,
            m=m,
        )

    def to_dense(self) -> torch.Tensor:
        """Scatter each group's kept values to their indices."""
        out_features, in_features = self.shape
        dense = torch.zeros(out_features, in_features // self.m, self.m, dtype=self.values.dtype, device=self.device)
        slots = self.indices.long().reshape(out_features, -1, self.n)
        dense.scatter_(-1, slots, self.values.reshape(out_features, -1, self.n))
        return dense.reshape(self.shape)
