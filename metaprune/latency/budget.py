"""Latency budgets: prune to a measured speed-up (``--latency-speedup``) or latency (``--latency-budget``).

:func:`prepare_latency_budget` loads (or measures) the model's latency table, measures the dense
model, and turns the request into a ratio of the predicted dense latency that the structured
allocator prunes to, with :class:`~metaprune.latency.predictor.LatencyCostModel` as its cost.
:func:`check_latency_met` then measures the pruned model against the dense one (interleaved,
median of :data:`CHECK_RUNS` runs) and fails unless the measured speed-up (or latency) is within
:data:`LATENCY_TOLERANCE` of the request: the promise is about the clock, not the predictor.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metaprune.errors import BudgetError, ConfigError, PruneError
from metaprune.latency.predictor import LatencyCostModel
from metaprune.latency.profile import ProfileSettings, batched, load_or_profile
from metaprune.latency.table import LatencyTable
from metaprune.latency.timing import measure_ms
from metaprune.prune.groups import ModelGroups

#: A latency-budget plan must measure within this relative distance of the requested speed-up (or latency).
LATENCY_TOLERANCE = 0.07
#: Interleaved dense/pruned measurements whose medians the end-of-job check compares.
CHECK_RUNS = 3


@dataclass(frozen=True)
class LatencyBudget:
    """A measured-latency target: exactly one of ``speedup`` (dense latency / pruned latency, >= 1) and
    ``budget_ms``; ``settings`` say how latency is measured (batch, threads, runtime), ``table`` names a
    table file to use instead of the cache."""

    speedup: float | None = None
    budget_ms: float | None = None
    settings: ProfileSettings = field(default_factory=ProfileSettings)
    table: str | None = None

    def __post_init__(self) -> None:
        if (self.speedup is None) == (self.budget_ms is None):
            raise BudgetError("give exactly one of --latency-speedup and --latency-budget")
        value = self.speedup if self.speedup is not None else self.budget_ms
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BudgetError(f"a latency target must be a finite number, got {value!r}")
        if self.speedup is not None and self.speedup < 1.0:
            raise BudgetError(f"--latency-speedup must be >= 1 (dense is 1), got {self.speedup}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise BudgetError(f"--latency-budget must be > 0 ms, got {self.budget_ms}")

    def target_ms(self, dense_ms: float) -> float:
        """The latency asked for, given the measured dense latency."""
        return self.budget_ms if self.budget_ms is not None else dense_ms / float(self.speedup)

    def describe(self) -> str:
        """The request as the user wrote it."""
        return f"{self.speedup:g}x latency speed-up" if self.speedup is not None else f"{self.budget_ms:g} ms"


@dataclass
class LatencySetup:
    """What pruning to a latency budget needs: the table, the ratio of the predicted dense latency to prune
    to, and the measured and predicted figures it came from."""

    budget: LatencyBudget
    table: LatencyTable
    table_path: Path
    inputs: torch.Tensor
    dense_ms: float
    dense_predicted_ms: float
    target_ms: float
    ratio: float

    def cost_factory(self, groups: ModelGroups) -> LatencyCostModel:
        """The latency predictor of ``groups`` (the engine's ``cost_factory``)."""
        return LatencyCostModel(groups, self.table)

    def predicted_ms(self, model: nn.Module, example_input: torch.Tensor) -> float:
        """The table's prediction for ``model`` (a pruned copy of the profiled architecture)."""
        groups = ModelGroups(model, example_input)
        predictor = LatencyCostModel(groups, self.table)
        return predictor.latency_ms(predictor.sizes)


def _measure(model: nn.Module, inputs: torch.Tensor, settings: ProfileSettings) -> float:
    return measure_ms(model, inputs, runtime=settings.runtime, threads=settings.threads, warmup=settings.warmup + 2,
                      repeats=settings.repeats + 6, statistic=settings.statistic)


def prepare_latency_budget(budget: LatencyBudget, model: nn.Module, example_input: torch.Tensor, *,
                           pattern: str = "channel", min_keep: float = 0.1) -> LatencySetup:
    """The latency table of ``model`` (cached, or measured now) and the cost ratio that meets ``budget``.

    BudgetError if the target is faster than the smallest network ``min_keep`` allows (as predicted);
    ConfigError for a masked pattern (a dense runtime does not get faster from zeros).
    """
    if pattern not in ("channel", "head"):
        raise ConfigError(f"latency budgets need a structured pattern (channel, head); {pattern} keeps zeros that "
                          "a dense runtime still computes")
    table, path, _ = load_or_profile(model, example_input, budget.settings, table_path=budget.table)
    inputs = batched(example_input, budget.settings.batch, budget.settings.seed)
    groups = ModelGroups(model, example_input)
    predictor = LatencyCostModel(groups, table)
    dense_predicted = predictor.latency_ms(predictor.sizes)
    dense_ms = _measure(model, inputs, budget.settings)
    target = budget.target_ms(dense_ms)
    ratio = target / dense_ms
    smallest = predictor.latency_ms(torch.tensor(
        [float(max(1, math.ceil(min_keep * size))) for size in predictor.sizes.tolist()], dtype=torch.float64))
    fastest = dense_ms * smallest / dense_predicted
    if ratio >= 1.0 + LATENCY_TOLERANCE:
        raise BudgetError(f"a latency budget of {target:.3g} ms is above the dense model's {dense_ms:.3g} ms: "
                          "nothing to prune; ask for less")
    if target < fastest * (1 - LATENCY_TOLERANCE):
        raise BudgetError(f"{budget.describe()} asks for {target:.3g} ms, faster than the smallest network "
                          f"--min-keep {min_keep:g} allows ({fastest:.3g} ms predicted, a "
                          f"{dense_ms / fastest:.2f}x speed-up); ask for less or lower --min-keep")
    return LatencySetup(budget, table, path, inputs, dense_ms, dense_predicted, target, min(1.0, ratio))


def check_latency_met(setup: LatencySetup, dense: nn.Module, pruned: nn.Module, example_input: torch.Tensor
                      ) -> dict[str, float | str]:
    """Measure ``pruned`` against ``dense`` (interleaved, median of :data:`CHECK_RUNS`); PruneError unless the
    measured speed-up (or latency) is within :data:`LATENCY_TOLERANCE` of the request.

    Returns the figures for the report: requested, predicted and measured latency and speed-up.
    """
    settings = setup.budget.settings
    dense_runs, pruned_runs = [], []
    for _ in range(CHECK_RUNS):
        dense_runs.append(_measure(dense, setup.inputs, settings))
        pruned_runs.append(_measure(pruned, setup.inputs, settings))
    dense_ms, pruned_ms = statistics.median(dense_runs), statistics.median(pruned_runs)
    # the table predicts ratios to the dense model; scaled by the dense latency measured now, beside the pruned one
    # (not by the one-off measurement of the setup, which a busy machine can throw off by tens of percent)
    predicted = setup.predicted_ms(pruned, example_input) * dense_ms / setup.dense_predicted_ms
    figures: dict[str, float | str] = {
        "request": setup.budget.describe(), "target_ms": setup.target_ms, "dense_ms": dense_ms,
        "measured_ms": pruned_ms, "predicted_ms": predicted, "prediction_error": predicted / pruned_ms - 1.0,
        "measured_speedup": dense_ms / pruned_ms, "batch": settings.batch, "threads": settings.threads,
        "runtime": settings.runtime, "statistic": settings.statistic, "table": str(setup.table_path),
    }
    if setup.budget.speedup is not None:
        requested, achieved, unit = float(setup.budget.speedup), dense_ms / pruned_ms, "x speed-up"
    else:
        requested, achieved, unit = setup.target_ms, pruned_ms, " ms"
    figures["requested"] = requested
    if abs(achieved / requested - 1.0) > LATENCY_TOLERANCE:
        raise PruneError(f"the pruned model measures {achieved:.3g}{unit} for a request of {requested:.3g}{unit} "
                         f"(beyond ±{LATENCY_TOLERANCE:.0%}; predicted {predicted:.3g} ms, measured {pruned_ms:.3g} ms): "
                         "re-profile the table (`metaprune profile --refresh`) on a quiet machine, or measure with --latency-statistic min")
    return figures


def latency_promise(setup: LatencySetup) -> dict[str, float]:
    """The report's ``budget`` for a latency target: the request and the predicted-latency ratio pruned to."""
    request = ({"latency_speedup": float(setup.budget.speedup)} if setup.budget.speedup is not None
               else {"latency_ms": float(setup.budget.budget_ms)})
    return {**request, "target_ms": setup.target_ms, "latency_ratio": setup.ratio}
