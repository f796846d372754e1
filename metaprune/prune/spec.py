"""The pruning spec: what to remove and how (pattern, criterion, ranking, schedule), one frozen object.

It sits beside :class:`~metaprune.prune.budget.Budget` (how much to remove) in the options
vocabulary that prune, search and meta-training compose (see :mod:`metaprune.specs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metaprune.errors import ConfigError
from metaprune.prune.plan import PATTERNS, RANKINGS


@dataclass(frozen=True)
class PruningSpec:
    """How to prune.

    Attributes:
        pattern: ``channel``, ``head``, ``unstructured`` or ``n:m``.
        criterion: a registered criterion name (:data:`metaprune.prune.criteria.CRITERIA`).
        criterion_options: options of that criterion (e.g. ``{"metanet": PATH}`` for ``meta``).
        ranking: ``global`` (one ranking across groups) or ``local`` (one ratio per group).
        schedule: a registered schedule name (``oneshot``, ``iterative``, ...); ``steps`` its rounds.
        min_keep: fraction of each group's channels always kept.
        n_m: ``(n, m)`` of the ``n:m`` pattern.
        calibration_size: images in the calibration batch (gradients, activations).
        recalibrate_bn: re-estimate BatchNorm statistics after each pruning step.
    """

    pattern: str = "channel"
    criterion: str = "group_l2"
    criterion_options: Mapping[str, Any] = field(default_factory=dict)
    ranking: str = "global"
    schedule: str = "oneshot"
    steps: int = 3
    min_keep: float = 0.1
    n_m: tuple[int, int] = (2, 4)
    calibration_size: int = 256
    recalibrate_bn: bool = True

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        if self.ranking not in RANKINGS:
            raise ConfigError(f"unknown ranking {self.ranking!r}; choose one of {', '.join(RANKINGS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"--steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "criterion_options", dict(self.criterion_options))
        object.__setattr__(self, "n_m", tuple(self.n_m))

    def with_pattern(self, pattern: str) -> PruningSpec:
        """The same spec with another pattern (a re-applied plan brings its own)."""
        from dataclasses import replace

        return replace(self, pattern=pattern)
