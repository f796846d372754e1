"""What a trial is scored by: output distortion (cheap), validation accuracy after BatchNorm
re-estimation (``bn_accuracy``, cheap, :mod:`metaprune.search.bn_accuracy`) or after a short fine-tune.

All are maximised. :class:`SearchSetup` is the picklable recipe (dense model, data,
budget) from which any process, a Ray worker included, rebuilds the search space and the
objective: the space itself holds a traced dependency graph that does not pickle.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import get_criterion
from metaprune.prune.structured import apply_plan
from metaprune.search.bn_accuracy import BNAccuracyObjective
from metaprune.search.distortion import MaskedModel
from metaprune.search.space import SearchSpace
from metaprune.train import evaluate, fit, recalibrate_batchnorm, seed_everything

if TYPE_CHECKING:
    from metaprune.latency import LatencyTable

OBJECTIVES = ("distortion", "finetune", "bn_accuracy")


def check_objective(name: str) -> None:
    """ConfigError unless ``name`` is one of :data:`OBJECTIVES`."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")


class Objective(Protocol):
    """Scores a projected keep-ratio vector; higher is better."""

    name: str
    rounds_count: int

    def rounds(self, keep_ratios: torch.Tensor) -> Iterator[float]:
        """Scores as evaluation proceeds (the last is final); schedulers such as ASHA may stop early."""


class DistortionObjective:
    """Minus the calibration output distortion of the pruned model (see :mod:`metaprune.search.distortion`)."""

    name = "distortion"
    rounds_count = 1

    def __init__(self, space: SearchSpace, calibration: tuple[torch.Tensor, torch.Tensor]):
        self.space, self.masked = space, MaskedModel(space, calibration)

    def rounds(self, keep_ratios: torch.Tensor) -> Iterator[float]:
        yield -float(self.masked.distortion(self.space.counts_of(keep_ratios)[None])[0])


class FinetuneObjective:
    """Validation accuracy of a pruned copy after fine-tuning on a fraction of the training set.

    The fine-tune is split into ``rounds_count`` equal parts, each followed by a validation
    score, so that a scheduler can stop unpromising trials.
    """

    name = "finetune"

    def __init__(self, space: SearchSpace, splits: DataSplits, calibration: tuple[torch.Tensor, torch.Tensor], *,
                 fraction: float = 0.25, rounds_count: int = 2, lr: float = 0.01, batch_size: int = 64, seed: int = 0):
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"fine-tune fraction must be in (0, 1], got {fraction}")
        self.space, self.splits, self.calibration = space, splits, calibration
        self.fraction, self.rounds_count, self.lr, self.batch_size, self.seed = fraction, rounds_count, lr, batch_size, seed
        self.val_loader = make_loaders(splits, batch_size=256, seed=seed)[1]

    def _part_loader(self, part: int) -> DataLoader:
        size = len(self.splits.train)
        per_round = max(self.batch_size, int(self.fraction * size / self.rounds_count))
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed))
        chosen = order[(part * per_round) % size:][:per_round].tolist()
        generator = torch.Generator().manual_seed(self.seed + part)
        return DataLoader(Subset(self.splits.train, chosen), batch_size=self.batch_size, shuffle=True, generator=generator)

    def rounds(self, keep_ratios: torch.Tensor) -> Iterator[float]:
        seed_everything(self.seed)
        model = copy.deepcopy(self.space.model)
        apply_plan(model, self.space.example_input, self.space.to_plan(keep_ratios), get_criterion(self.space.criterion),
                   self.calibration)
        # removed channels shift every later activation: without new BatchNorm statistics the pruned
        # model scores at chance and a short fine-tune cannot repair them (the prune job does the same)
        # (a fresh loader each trial: the same batches for every trial, so equal plans score equally)
        recalibrate_batchnorm(model, make_loaders(self.splits, batch_size=256, seed=self.seed)[0])
        for part in range(self.rounds_count):
            fit(model, self._part_loader(part), epochs=1, lr=self.lr, progress=False)
            yield evaluate(model, self.val_loader)


@dataclass
class SearchSetup:
    """Everything needed to rebuild a search space and its objective in any process.

    ``model`` is ``None`` for methods that design a new network (they read only the data and budget).
    ``latency_table`` (a :class:`~metaprune.latency.LatencyTable` of ``model``) makes the space's cost the
    table's predicted latency, and ``budget.flops_ratio`` a ratio of predicted latency.
    ``round_to`` > 1 keeps multiples of it in every group (``--round-to``, :class:`~metaprune.search.space.SearchSpace`).
    """

    model: nn.Module | None
    example_input: torch.Tensor
    budget: Budget
    calibration: tuple[torch.Tensor, torch.Tensor]
    objective: str = "distortion"
    splits: DataSplits | None = None
    min_keep: float = 0.1
    criterion: str = "group_l2"
    finetune_fraction: float = 0.25
    seed: int = 0
    latency_table: LatencyTable | None = None
    round_to: int = 1

    def __post_init__(self) -> None:
        check_objective(self.objective)
        if self.objective in ("finetune", "bn_accuracy") and self.splits is None:
            raise ConfigError(f"the {self.objective} objective needs the data splits")

    def cost_factory(self) -> Callable[[Any], Any] | None:
        """The latency predictor's factory when the budget is a latency (None: FLOPs)."""
        if self.latency_table is None:
            return None
        from metaprune.latency import LatencyCostModel

        table = self.latency_table
        return lambda groups: LatencyCostModel(groups, table)

    def build(self) -> tuple[SearchSpace, Objective]:
        """The search space of the dense model and the objective that scores its points."""
        if self.model is None:
            raise ConfigError("this search needs the dense model to build its search space")
        self.model.eval()
        space = SearchSpace(self.model, self.example_input, self.budget, min_keep=self.min_keep, criterion=self.criterion,
                            cost_factory=self.cost_factory(), round_to=self.round_to)
        if self.objective == "distortion":
            return space, DistortionObjective(space, self.calibration)
        if self.objective == "bn_accuracy":
            return space, BNAccuracyObjective(space, self.splits, self.calibration, seed=self.seed)
        return space, FinetuneObjective(space, self.splits, self.calibration, fraction=self.finetune_fraction,
                                        seed=self.seed)
