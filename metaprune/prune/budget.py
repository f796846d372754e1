"""The FLOPs budget: one conversion, one validation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from metaprune.errors import BudgetError


@dataclass(frozen=True)
class Budget:
    """Target cost of the pruned model as a fraction of the dense FLOPs, ``0 < flops_ratio <= 1``.

    Build it with :meth:`from_ratio` or :meth:`from_speedup` (``speedup = 1 / flops_ratio``).
    """

    flops_ratio: float

    def __post_init__(self) -> None:
        ratio = self.flops_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
            raise BudgetError(f"FLOPs budget must be a finite number, got {ratio!r}")
        if not 0.0 < ratio <= 1.0:
            raise BudgetError(
                f"FLOPs budget must satisfy 0 < ratio <= 1 (fraction of the dense FLOPs), got {ratio}; "
                "for a speed-up use --speedup (>= 1)"
            )

    @classmethod
    def from_ratio(cls, flops_ratio: float) -> Budget:
        """Budget from a FLOPs ratio, e.g. 0.5 keeps half of the FLOPs."""
        return cls(float(flops_ratio))

    @classmethod
    def from_speedup(cls, speedup: float) -> Budget:
        """Budget from a FLOPs speed-up >= 1, e.g. 4 keeps a quarter of the FLOPs."""
        if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not math.isfinite(speedup):
            raise BudgetError(f"speed-up must be a finite number, got {speedup!r}")
        if speedup < 1.0:
            raise BudgetError(f"speed-up must be >= 1 (dense is 1), got {speedup}")
        return cls(1.0 / float(speedup))

    @classmethod
    def from_options(cls, flops_ratio: float | None = None, speedup: float | None = None) -> Budget:
        """Budget from exactly one of ``flops_ratio`` and ``speedup`` (the CLI's two spellings)."""
        if (flops_ratio is None) == (speedup is None):
            raise BudgetError("give exactly one of a FLOPs ratio (--budget) and a speed-up (--speedup)")
        return cls.from_ratio(flops_ratio) if flops_ratio is not None else cls.from_speedup(speedup)

    @property
    def speedup(self) -> float:
        """FLOPs speed-up this budget asks for."""
        return 1.0 / self.flops_ratio

    def target_flops(self, dense_flops: float) -> float:
        """FLOPs the pruned model may have."""
        return self.flops_ratio * dense_flops
