"""The pruning spec: what to remove and how (pattern, criterion, ranking, schedule), one frozen object.

It sits beside :class:`~metaprune.prune.budget.Budget` (how much to remove) in the options
vocabulary that prune, search and meta-training compose (see :mod:`metaprune.specs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metaprune.errors import ConfigError
from metaprune.prune.plan import PATTERNS, RANKINGS
from metaprune.prune.rounding import check_round_to

#: Pruning rounds of iterative schedules: more than this is a typo (each round fine-tunes).
MAX_STEPS = 100


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
        round_to: structured patterns keep multiples of this many channels per group (``--round-to 8``).
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
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        if self.ranking not in RANKINGS:
            raise ConfigError(f"unknown ranking {self.ranking!r}; choose one of {', '.join(RANKINGS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"--steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}")
        if not (isinstance(self.min_keep, (int, float)) and math.isfinite(self.min_keep) and 0 < self.min_keep <= 1):
            raise ConfigError(f"--min-keep must be in (0, 1], got {self.min_keep}")
        object.__setattr__(self, "n_m", tuple(self.n_m))
        n, m = self.n_m
        if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m <= 64):
            raise ConfigError(f"--n-m needs whole numbers 0 < n < m <= 64, got {n}:{m}")
        if not 1 <= self.calibration_size <= 100_000:
            raise ConfigError(f"calibration size must be in [1, 100000], got {self.calibration_size}")
        object.__setattr__(self, "criterion_options", dict(self.criterion_options))
        check_round_to(self.round_to)
        if (self.round_to > 1 or self.ranking == "knapsack") and self.pattern not in ("channel", "head"):
            raise ConfigError(f"--round-to and --ranking knapsack apply to structured patterns (channel, head), "
                              f"not {self.pattern}")
