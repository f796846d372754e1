"""Evolutionary search over per-group keep ratios at a fixed budget, after EvoPress (Sieberling et al., ICML'25).

EvoPress observes that the errors of pruning several layers are not additive (so a dynamic program
over per-layer distortions can be misled) and searches whole plans instead: a (1 + λ) evolution
whose mutation moves compression between layers at a constant total budget, and whose selection
scores the offspring on few samples first and only the best of them on more.

Here a plan is a vector of whole-channel keep counts on the budget of a
:class:`~metaprune.search.space.SearchSpace` (FLOPs, or the space's cost):

* **start**: the best of the plans of the ``start`` allocators (EvoPress starts from uniform).
* **mutation**: 1 to ``max_moves`` moves; a move removes a chunk of ``move_fraction`` of a random
  group's channels (at least one step) and adds channels to another random group until the cost is
  back at the budget (the closer of the two counts that straddle it). The cost therefore stays on
  the budget without rescaling the other groups; a plan that cannot be refilled (the receiver is
  full) is projected by the space, so every candidate is feasible.
* **selection**: the objective's rounds are the fidelities (``bn_accuracy``: growing validation
  samples; ``finetune``: longer fine-tunes). All offspring get the first round, the best
  ``survivors[r]`` go on to round ``r + 1``, and the one with the best last-round score replaces
  the parent if it scores at least as high (the parent's score is kept, as the objective is
  deterministic). With a one-round objective (``distortion``) this is a plain (1 + λ) evolution.

Every evaluation is a :class:`~metaprune.search.methods.TrialRecord`: ``COMPLETE`` when it reached
the last round, ``PRUNED`` (with its partial score) when selection dropped it earlier. Scores are
cached by plan, so a plan met again costs nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from metaprune.errors import ConfigError
from metaprune.logs import progress_bar
from metaprune.search.allocators import get_allocator
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, register_method
from metaprune.search.objective import Objective
from metaprune.search.space import TOLERANCE, SearchSpace

Calibration = tuple[torch.Tensor, torch.Tensor]


@dataclass
class EvolutionConfig:
    """Options of an evolutionary search.

    ``survivors[r]`` candidates go from round ``r`` to round ``r + 1`` of the objective (default:
    a quarter of the previous stage, at least one); ``start`` names the allocators whose plans seed
    the search.
    """

    generations: int = 50
    offspring: int = 8
    survivors: tuple[int, ...] | None = None
    max_moves: int = 3
    move_fraction: float = 1 / 16
    start: tuple[str, ...] = ("uniform",)
    seed: int = 0

    def __post_init__(self) -> None:
        for label, value in (("generations", self.generations), ("offspring", self.offspring),
                             ("max_moves", self.max_moves)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"evolution {label} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.move_fraction <= 1.0:
            raise ConfigError(f"evolution move_fraction must be in (0, 1], got {self.move_fraction}")
        if not self.start:
            raise ConfigError("evolution needs at least one start allocator")

    def stage_survivors(self, rounds_count: int) -> list[int]:
        """Candidates kept after each round but the last (one entry per round transition)."""
        if self.survivors is not None:
            if len(self.survivors) != rounds_count - 1 or any(count < 1 for count in self.survivors):
                raise ConfigError(f"evolution survivors needs {rounds_count - 1} counts >= 1 for an objective of "
                                  f"{rounds_count} rounds, got {self.survivors}")
            return list(self.survivors)
        kept, counts = self.offspring, []
        for _ in range(rounds_count - 1):
            kept = max(1, kept // 4)
            counts.append(kept)
        return counts


class _Scores:
    """Round scores of plans (by keep counts), computed lazily and cached: a plan is never scored twice."""

    def __init__(self, space: SearchSpace, objective: Objective):
        self.space, self.objective = space, objective
        self.cache: dict[tuple[float, ...], list[float]] = {}
        self.live: dict[tuple[float, ...], Iterator[float]] = {}

    def upto(self, counts: torch.Tensor, rounds: int) -> float:
        """The score of ``counts`` after ``rounds`` rounds (1-based), evaluating only what is missing."""
        key = tuple(counts.tolist())
        scores = self.cache.setdefault(key, [])
        while len(scores) < rounds:
            if key not in self.live:
                self.live[key] = self.objective.rounds(counts / self.space.sizes)
                for _ in scores:  # a fresh evaluation replays the rounds already known
                    next(self.live[key])
            scores.append(float(next(self.live[key])))
        if len(scores) == self.objective.rounds_count:
            self.live.pop(key, None)
        return scores[rounds - 1]

    def drop(self, counts: torch.Tensor) -> None:
        """Free the evaluation state of a plan that selection dropped (its scores stay cached)."""
        self.live.pop(tuple(counts.tolist()), None)


def _chunk(space: SearchSpace, index: int, fraction: float) -> float:
    """Channels one move takes from group ``index``: ``fraction`` of its width in whole steps, at least one step."""
    step = float(space.steps[index])
    return step * max(1, round(fraction * float(space.sizes[index]) / step))


def mutate(space: SearchSpace, counts: torch.Tensor, rng: random.Random, max_moves: int = 3,
           move_fraction: float = 1 / 16) -> torch.Tensor:
    """Keep counts after 1 to ``max_moves`` budget-neutral moves of channels from one group to another.

    The result is on the space's budget (refilled, else projected): a feasible plan.
    """
    counts = counts.clone()
    target = space.budget.flops_ratio
    for _ in range(rng.randint(1, max_moves)):
        donors = [g for g in range(len(space)) if counts[g] > space.floor_counts[g]]
        if not donors:
            break
        donor = rng.choice(donors)
        receivers = [g for g in range(len(space)) if g != donor and counts[g] < space.sizes[g]]
        if not receivers:
            break
        receiver = rng.choice(receivers)
        counts[donor] = max(float(space.floor_counts[donor]), float(counts[donor]) - _chunk(space, donor, move_fraction))
        while space.flops_ratio_of_counts(counts) < target and counts[receiver] < space.sizes[receiver]:
            below = counts.clone()
            counts[receiver] = min(float(space.sizes[receiver]), float(counts[receiver] + space.steps[receiver]))
            if abs(space.flops_ratio_of_counts(below) - target) < abs(space.flops_ratio_of_counts(counts) - target):
                counts = below
                break
    if abs(space.flops_ratio_of_counts(counts) - target) > TOLERANCE * target / 2:
        counts = space.counts_of(space.project(counts / space.sizes))
    return counts


def _record(trials: list[TrialRecord], space: SearchSpace, counts: torch.Tensor, score: float, complete: bool,
            source: str) -> None:
    ratios = counts / space.sizes
    trials.append(TrialRecord(len(trials), ratios.tolist(), space.flops_ratio_of_counts(counts), score,
                              "COMPLETE" if complete else "PRUNED", source))


def evolution_search(space: SearchSpace, objective: Objective, calibration: Calibration | None = None,
                     config: EvolutionConfig | None = None, *, progress: bool = True) -> SearchResult:
    """Run the evolutionary search of this module; the best plan is the last parent."""
    config = config or EvolutionConfig()
    rounds_count = objective.rounds_count
    survivors = config.stage_survivors(rounds_count)
    rng = random.Random(config.seed)
    scores = _Scores(space, objective)
    trials: list[TrialRecord] = []

    parent, parent_score = None, -math.inf
    for name in config.start:
        counts = space.counts_of(space.project(space.ratios_of_plan(get_allocator(name).allocate(space, calibration))))
        score = scores.upto(counts, rounds_count)
        _record(trials, space, counts, score, True, name)
        if score > parent_score:
            parent, parent_score = counts, score

    with progress_bar("evolution", config.generations, enabled=progress) as bar:
        for _ in range(config.generations):
            children = [mutate(space, parent, rng, config.max_moves, config.move_fraction) for _ in range(config.offspring)]
            unique = list({tuple(child.tolist()): child for child in children
                           if not torch.equal(child, parent)}.values())
            for round_index in range(rounds_count):
                ranked = sorted(unique, key=lambda child, r=round_index: scores.upto(child, r + 1), reverse=True)
                last = round_index == rounds_count - 1
                keep = len(ranked) if last else survivors[round_index]
                for child in ranked[keep:]:
                    _record(trials, space, child, scores.upto(child, round_index + 1), False, "evolution")
                    scores.drop(child)
                unique = ranked[:keep]
            for child in unique:
                _record(trials, space, child, scores.upto(child, rounds_count), True, "evolution")
            if unique and scores.upto(unique[0], rounds_count) >= parent_score:
                parent, parent_score = unique[0], scores.upto(unique[0], rounds_count)
            bar.advance(status=f"best {parent_score:.4g}")

    return SearchResult("evolution", space.to_plan(parent / space.sizes), parent_score, trials)


@register_method("evolution")
def evolution_method(context: SearchContext) -> SearchResult:
    """EvoPress-style evolution over keep ratios; ``--trials`` is the number of generations (8 offspring each)."""
    config = EvolutionConfig(generations=context.trials, seed=context.seed)
    return evolution_search(context.space, context.objective, context.setup.calibration, config,
                            progress=context.progress)
