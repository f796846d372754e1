"""The registry of search methods by name: allocators (one trial) and searchers (many trials).

A method takes a :class:`SearchContext` and returns a :class:`SearchResult`. Other packages
add theirs with :func:`register_method` (``metaprune.search.nas`` registers TAS and DASS);
the CLI lists whatever is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaprune.errors import ConfigError, SearchError
from metaprune.prune.plan import PrunePlan
from metaprune.registry import Registry
from metaprune.search.allocators import get_allocator
from metaprune.search.objective import Objective, SearchSetup
from metaprune.search.space import TOLERANCE, SearchSpace

#: Optuna samplers by name, each a factory ``seed -> sampler`` (registered by :mod:`metaprune.search.optuna_search`).
SAMPLERS: Registry[Callable[[int], object]] = Registry("sampler")


#: More trials than any search here needs; a larger count is a typo that would run for weeks.
MAX_TRIALS = 100_000
#: More parallel workers than one machine or a modest cluster offers.
MAX_WORKERS = 1024


def check_search_options(trials: int, workers: int, sampler: str) -> None:
    """ConfigError unless trials and workers are integers in range and ``sampler`` is registered.

    ``1 <= trials <= MAX_TRIALS``, ``1 <= workers <= MAX_WORKERS``, ``sampler`` one of :data:`SAMPLERS`.
    """
    for flag, value, most in (("--trials", trials, MAX_TRIALS), ("--workers", workers, MAX_WORKERS)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{flag} must be an integer, got {value!r}")
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
        if value > most:
            raise ConfigError(f"{flag} must be <= {most}, got {value}")
    SAMPLERS.get(sampler)


@dataclass
class SearchContext:
    """One search: the space and objective built from ``setup``, and how many trials to spend where.

    ``space`` and ``objective`` are ``None`` when ``setup`` has no dense model: for methods
    that design a new network (see :func:`designs_new_network`).
    """

    setup: SearchSetup
    space: SearchSpace | None
    objective: Objective | None
    trials: int = 50
    sampler: str = "tpe"
    seed: int = 0
    run_dir: Path | None = None
    study: str | None = None
    storage: str | None = None
    workers: int = 1
    address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_search_options(self.trials, self.workers, self.sampler)

    @classmethod
    def from_setup(cls, setup: SearchSetup, **options: object) -> SearchContext:
        """Build the space and objective of ``setup`` (none without a dense model) and wrap them with the search options."""
        space, objective = setup.build() if setup.model is not None else (None, None)
        return cls(setup, space, objective, **options)  # type: ignore[arg-type]

    def score(self, keep_ratios: torch.Tensor) -> float:
        """The objective's final score of a projected keep-ratio vector."""
        *_, final = self.objective.rounds(keep_ratios)
        return final


@dataclass
class TrialRecord:
    """One evaluated (projected, hence feasible) point of the search space."""

    number: int
    keep_ratios: list[float]
    flops_ratio: float
    score: float | None
    state: str = "COMPLETE"
    source: str = ""


@dataclass
class SearchResult:
    """The best plan, every trial, and the Pareto front (score up, FLOPs down) of the complete trials."""

    method: str
    best_plan: PrunePlan
    best_score: float | None
    trials: list[TrialRecord]
    pareto: list[TrialRecord] = field(default_factory=list)
    #: the Optuna study behind the trials, if any: its ``trials_dataframe()`` adds timings and raw parameters to the CSV
    study: Any = None
    #: a latency-budget search's end-of-job measurement of the best plan (requested, predicted, measured)
    latency: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.pareto:
            self.pareto = pareto_front(self.trials)


def pareto_front(trials: list[TrialRecord]) -> list[TrialRecord]:
    """Complete trials not dominated in (higher score, lower FLOPs ratio), by FLOPs."""
    done = [trial for trial in trials if trial.state == "COMPLETE" and trial.score is not None]
    front = [
        trial for trial in done
        if not any(other.score >= trial.score and other.flops_ratio <= trial.flops_ratio
                   and (other.score > trial.score or other.flops_ratio < trial.flops_ratio) for other in done)
    ]
    return sorted(front, key=lambda trial: trial.flops_ratio)


def best_feasible(trials: list[TrialRecord], budget_ratio: float) -> TrialRecord:
    """The highest-scoring complete trial that meets the budget: FLOPs ratio within ``TOLERANCE`` of it.

    Trials far below the budget (NSGA-II explores down to half of it) stay on the Pareto front
    but are not the answer to the budget asked for.
    """
    feasible = [trial for trial in trials if trial.state == "COMPLETE" and trial.score is not None
                and abs(trial.flops_ratio - budget_ratio) <= budget_ratio * TOLERANCE]
    if not feasible:
        raise SearchError(f"no complete trial within ±{TOLERANCE:.0%} of the budget {budget_ratio:.4g}; "
                          "run more trials")
    return max(feasible, key=lambda trial: trial.score)


def check_search_met(result: SearchResult, budget_ratio: float, achieved: float | None = None,
                     unit: str = "FLOPs ratio") -> None:
    """SearchError unless the best plan's FLOPs ratio (or ``achieved``, the ratio of the space's cost, e.g.
    predicted latency) is within ``TOLERANCE`` of the budget (the search's promise)."""
    achieved = result.best_plan.flops_ratio if achieved is None else achieved
    if achieved is None or abs(achieved - budget_ratio) > budget_ratio * TOLERANCE:
        shown = f"no {unit}" if achieved is None else f"a {unit} of {achieved:.4f}"
        raise SearchError(f"the {result.method} search's best plan has {shown} for a budget of {budget_ratio:.4f} "
                          f"(beyond ±{TOLERANCE:.0%}); run more trials or choose a budget the model can reach")


SearchMethod = Callable[[SearchContext], SearchResult]

#: Every search method by name: the allocators (one trial each), the searchers (Optuna, Ray
#: Tune) and the differentiable NAS methods. Add one with ``@register_method(name)``.
METHODS: Registry[SearchMethod] = Registry("search method")
#: Methods that design a new network instead of pruning the given one (DASS): no dense model is trained for them.
NEW_NETWORK_METHODS: set[str] = set()
#: Methods that budget FLOPs in their own way (TAS's differentiable expected FLOPs) and cannot take a latency budget.
FLOPS_ONLY_METHODS: set[str] = set()


def register_method(name: str, *, new_network: bool = False,
                    latency: bool = True) -> Callable[[SearchMethod], SearchMethod]:
    """Decorator registering a search method under ``name``.

    ``new_network=True``: the method designs its own network from the data and never reads the
    dense model; the search then trains none and its context has no space nor objective.
    ``latency=False``: the method does not go through the space's cost (and its projection), so a
    latency budget (``--latency-speedup``) is refused for it; a new-network method never takes one.
    """
    def decorator(method: SearchMethod) -> SearchMethod:
        METHODS.register(name)(method)
        if new_network:
            NEW_NETWORK_METHODS.add(name)
        if new_network or not latency:
            FLOPS_ONLY_METHODS.add(name)
        return method
    return decorator


def check_latency_method(name: str) -> None:
    """ConfigError unless the registered method ``name`` can search under a latency budget."""
    get_method(name)
    if name in FLOPS_ONLY_METHODS:
        able = ", ".join(sorted(set(METHODS.names()) - FLOPS_ONLY_METHODS))
        raise ConfigError(f"--method {name} cannot take a latency budget (--latency-speedup/--latency-budget): it "
                          f"budgets FLOPs (or weights) its own way; use one of {able}, or a FLOPs budget")


def designs_new_network(name: str) -> bool:
    """Whether the registered method ``name`` designs a new network (no dense model needed)."""
    get_method(name)
    return name in NEW_NETWORK_METHODS


def get_method(name: str) -> SearchMethod:
    """A registered method by name, else ConfigError listing the known ones."""
    return METHODS.get(name)


def allocator_method(name: str) -> SearchMethod:
    """A method that evaluates one allocator's plan as its single trial."""
    def run(context: SearchContext) -> SearchResult:
        plan = get_allocator(name).allocate(context.space, context.setup.calibration)
        keep_ratios = context.space.ratios_of_plan(plan)
        trial = TrialRecord(0, keep_ratios.tolist(), context.space.flops_ratio(keep_ratios), context.score(keep_ratios),
                            source=name)
        return SearchResult(name, plan, trial.score, [trial])
    run.__doc__ = f"The {name} allocator's plan, scored by the objective."
    return run


for _name in ("uniform", "erk", "global_magnitude", "lamp", "dp", "halp"):
    register_method(_name)(allocator_method(_name))
