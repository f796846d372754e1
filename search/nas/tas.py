"""TAS: Network Pruning via Transformable Architecture Search (Dong & Yang, NeurIPS'19), as a search method.

The dense network is the search network: :class:`~metaprune.search.nas.width_search.WidthSearch`
samples two widths per prunable group and :class:`~metaprune.search.nas.depth_search.DepthSearch`
two depths per residual stage (optional), both by Gumbel-softmax with a temperature that
decays linearly. Each step updates the weights on one half of the training split (cross-entropy
of the sampled network) and the architecture logits on the other half (cross-entropy plus
``cost_weight`` times the :func:`~metaprune.search.nas.expected_cost.cost_loss` of the expected
FLOPs). The argmax widths are projected onto the budget by the
:class:`~metaprune.search.space.SearchSpace` and returned as a :class:`PrunePlan`; the derived
network is then trained with knowledge distillation from the unpruned one
(:func:`train_with_distillation`).

A plan cannot remove blocks, so depth search is off by default (and in ``metaprune search
--method tas``); with ``search_depth=True`` the plan refers to the network with the dropped
blocks (:func:`derive_network` builds it) and its ``flops_ratio`` is relative to the full dense network.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError
from metaprune.flops import count_flops
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import get_criterion
from metaprune.prune.plan import PrunePlan
from metaprune.prune.structured import apply_plan, score_groups
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, register_method
from metaprune.search.nas.bilevel import alternating_batches, bilevel_optimizers, half_loaders
from metaprune.search.nas.depth_search import DepthSearch, drop_blocks
from metaprune.search.nas.expected_cost import ExpectedCost, cost_loss
from metaprune.search.nas.gumbel import linear_temperature
from metaprune.search.nas.width_search import WidthSearch
from metaprune.search.space import SearchSpace
from metaprune.train import FitResult, fit, seed_everything

Calibration = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TASConfig:
    """Options of a TAS search (defaults follow the paper where they fit a CPU budget)."""

    fractions: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    search_depth: bool = False
    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int = 64
    weight_lr: float = 0.01
    arch_lr: float = 0.05
    arch_weight_decay: float = 1e-3
    cost_weight: float = 2.0
    tolerance: float = 0.05
    temperature_start: float = 10.0
    temperature_end: float = 0.1
    alignment: str = "pad"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.steps_per_epoch is not None and self.steps_per_epoch < 1):
            raise ConfigError("TAS needs epochs >= 1, batch_size >= 1 and steps_per_epoch >= 1 (or None)")
        if self.weight_lr <= 0 or self.arch_lr <= 0 or self.cost_weight < 0:
            raise ConfigError("TAS needs positive learning rates and a non-negative cost weight")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"TAS cost tolerance must be in [0, 1), got {self.tolerance}")


@dataclass
class TASResult:
    """The derived architecture: plan (projected onto the budget), depths, final distributions, history."""

    plan: PrunePlan
    depths: dict[str, int]
    width_probabilities: dict[str, list[float]]
    depth_probabilities: dict[str, list[float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    search_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON ready)."""
        return {**dataclasses.asdict(self), "plan": self.plan.to_dict()}


class TASSearch:
    """The search network of one :class:`SearchSpace`: a copy of its dense model with width (and depth) logits."""

    def __init__(self, space: SearchSpace, calibration: Calibration | None, config: TASConfig):
        self.space, self.config = space, config
        self.network = copy.deepcopy(space.model)
        importance = score_groups(space.groups, get_criterion(space.criterion), calibration)
        self.widths = WidthSearch(space, importance, config.fractions, config.alignment)
        self.depth = DepthSearch(self.network, space.example_input) if config.search_depth else None
        blocks = list(self.depth.block_probabilities()) if self.depth else None
        self.cost = ExpectedCost(space, blocks)
        self.target_flops = space.budget.target_flops(space.dense_flops)

    def arch_parameters(self) -> list[nn.Parameter]:
        """Width logits, then depth logits."""
        return list(self.widths.parameters()) + (list(self.depth.parameters()) if self.depth else [])

    def expected_flops(self) -> torch.Tensor:
        """Differentiable expected FLOPs of the current distributions."""
        mean, square = self.widths.ratio_moments()
        return self.cost(mean, square, self.depth.block_probabilities() if self.depth else None)

    def sample(self, temperature: float) -> None:
        """Draw the widths and depths of the next forward pass."""
        self.widths.sample(temperature)
        if self.depth:
            self.depth.sample(temperature)

    @contextlib.contextmanager
    def attached(self) -> Iterator[nn.Module]:
        """The search network with its width and depth hooks in place."""
        with self.widths.attached(self.network), (self.depth.attached(self.network) if self.depth
                                                  else contextlib.nullcontext()):
            yield self.network

    def search(self, splits: DataSplits, progress: bool = False) -> list[dict[str, Any]]:
        """Alternate weight and architecture updates for ``config.epochs``; one history entry per epoch."""
        config = self.config
        seed_everything(config.seed)
        weight_loader, arch_loader = half_loaders(splits.train, config.batch_size, config.seed)
        weights = [parameter for parameter in self.network.parameters() if parameter.requires_grad]
        weight_optimizer, schedule, arch_optimizer = bilevel_optimizers(
            weights, self.arch_parameters(), epochs=config.epochs, weight_lr=config.weight_lr, weight_decay=5e-4,
            arch_lr=config.arch_lr, arch_weight_decay=config.arch_weight_decay, nesterov=True)
        history = []
        with self.attached() as network:
            network.train()
            for epoch in range(config.epochs):
                temperature = linear_temperature(epoch, config.epochs, config.temperature_start, config.temperature_end)
                losses = []
                for (inputs, targets), (arch_inputs, arch_targets) in alternating_batches(
                        weight_loader, arch_loader, config.steps_per_epoch):
                    self.sample(temperature)
                    loss = F.cross_entropy(network(inputs), targets)
                    weight_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    weight_optimizer.step()
                    self.sample(temperature)
                    expected = self.expected_flops()
                    arch_loss = F.cross_entropy(network(arch_inputs), arch_targets) \
                        + config.cost_weight * cost_loss(expected, self.target_flops, config.tolerance)
                    arch_optimizer.zero_grad(set_to_none=True)
                    arch_loss.backward()
                    arch_optimizer.step()
                    losses.append((loss.item(), arch_loss.item()))
                schedule.step()
                history.append(self._snapshot(epoch, temperature, losses))
                if progress:
                    print(f"tas epoch {epoch + 1}/{config.epochs}: weight loss {history[-1]['weight_loss']:.3f}, "
                          f"expected FLOPs ratio {history[-1]['expected_flops_ratio']:.3f}", flush=True)
        return history

    def _snapshot(self, epoch: int, temperature: float, losses: list[tuple[float, float]]) -> dict[str, Any]:
        with torch.no_grad():
            expected = float(self.expected_flops()) / self.space.dense_flops
        ratios = self.widths.argmax_ratios()
        return {"epoch": epoch, "temperature": temperature,
                "weight_loss": sum(w for w, _ in losses) / max(1, len(losses)),
                "arch_loss": sum(a for _, a in losses) / max(1, len(losses)),
                "expected_flops_ratio": expected, "argmax_keep_ratios": ratios.tolist(),
                "argmax_flops_ratio": self.space.flops_ratio(ratios),
                "depths": self.depth.argmax_depths() if self.depth else {}}

    def derive(self, history: list[dict[str, Any]] | None = None, seconds: float = 0.0) -> TASResult:
        """The argmax architecture, widths projected onto the budget."""
        depths = self.depth.argmax_depths() if self.depth else {}
        plan = project_architecture(self.space, self.widths.argmax_ratios(), depths)
        widths = {name: p.detach().tolist() for name, p in zip(self.space.names, self.widths.probabilities())}
        stages = zip(self.depth.stages, self.depth.probabilities()) if self.depth else []
        depth_probabilities = {name: p.detach().tolist() for name, p in stages}
        return TASResult(plan, depths, widths, depth_probabilities, history or [], seconds)


def project_architecture(space: SearchSpace, keep_ratios: torch.Tensor, depths: dict[str, int]) -> PrunePlan:
    """The plan of ``keep_ratios`` projected onto the budget of ``space``, on the network with ``depths`` blocks.

    Without dropped blocks this is ``space.to_plan(space.project(keep_ratios))``. With them the
    widths are projected onto the budget of the shallower network, and the plan's ``flops_ratio``
    is relative to the full dense network.
    """
    full = {name: len(space.model.get_submodule(name)) for name in depths}
    if all(depths[name] == full[name] for name in depths):
        return space.to_plan(space.project(keep_ratios))
    shallow = drop_blocks(copy.deepcopy(space.model), depths)
    shallow_flops = count_flops(shallow, space.example_input)
    target = space.budget.target_flops(space.dense_flops)
    shallow_space = SearchSpace(shallow, space.example_input, Budget(min(1.0, target / shallow_flops)),
                                min_keep=space.min_keep, criterion=space.criterion)
    by_name = dict(zip(space.names, keep_ratios.tolist()))
    projected = shallow_space.project(torch.tensor([by_name.get(name, 1.0) for name in shallow_space.names]))
    plan = shallow_space.to_plan(projected)
    plan.flops_ratio = round(plan.flops_ratio * shallow_space.dense_flops / space.dense_flops, 6)
    return plan


def tas_search(space: SearchSpace, splits: DataSplits, calibration: Calibration | None = None,
               config: TASConfig | None = None, progress: bool = False) -> TASResult:
    """Run TAS on the dense model of ``space`` with the training split of ``splits``; the derived architecture."""
    config = config or TASConfig()
    start = time.perf_counter()
    search = TASSearch(space, calibration, config)
    history = search.search(splits, progress)
    return search.derive(history, time.perf_counter() - start)


def derive_network(dense: nn.Module, example_input: torch.Tensor, plan: PrunePlan,
                   depths: dict[str, int] | None = None, calibration: Calibration | None = None) -> nn.Module:
    """A pruned copy of ``dense``: stages cut to ``depths`` blocks, then channels removed by ``plan``.

    With a :class:`TASResult` pass ``result.plan`` and ``result.depths``; any structured plan
    of ``dense`` (e.g. uniform) works with ``depths=None``.
    """
    network = drop_blocks(copy.deepcopy(dense), depths or {})
    apply_plan(network, example_input, plan, get_criterion(plan.criterion), calibration)
    return network


def train_with_distillation(student: nn.Module, teacher: nn.Module, splits: DataSplits, *, epochs: int,
                            lr: float = 0.01, batch_size: int = 64, seed: int = 0, progress: bool = False) -> FitResult:
    """Train the derived network in place with knowledge distillation from the unpruned ``teacher``."""
    seed_everything(seed)
    train_loader, val_loader, _ = make_loaders(splits, batch_size=batch_size, seed=seed)
    return fit(student, train_loader, epochs=epochs, lr=lr, val_loader=val_loader, teacher=teacher,
               progress=progress, description="train derived (KD)")


@register_method("tas", latency=False)
def tas_method(context: SearchContext) -> SearchResult:
    """TAS through ``metaprune search --method tas``: ``--trials`` is the number of search epochs.

    Each epoch's argmax architecture is recorded as an ``INTERMEDIATE`` trial; the derived,
    projected plan is the one ``COMPLETE`` trial, scored by the search objective. With a run
    directory, ``tas.json`` holds the final width distributions and the search history.
    """
    splits = context.setup.splits
    if splits is None:
        raise ConfigError("TAS trains the search network: the search setup needs the data splits")
    config = TASConfig(epochs=context.trials, seed=context.seed)
    result = tas_search(context.space, splits, context.setup.calibration, config, progress=context.progress)
    keep_ratios = context.space.ratios_of_plan(result.plan)
    trials = [TrialRecord(entry["epoch"], entry["argmax_keep_ratios"], entry["argmax_flops_ratio"], None,
                          "INTERMEDIATE", "tas") for entry in result.history]
    trials.append(TrialRecord(len(trials), keep_ratios.tolist(), context.space.flops_ratio(keep_ratios),
                              context.score(keep_ratios), source="tas"))
    if context.run_dir:
        (context.run_dir / "tas.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return SearchResult("tas", result.plan, trials[-1].score, trials)
