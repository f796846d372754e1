"""The search space: per-group keep ratios in ``[floor, 1]`` and the projection onto a cost budget.

The cost is the FLOPs (:class:`~metaprune.prune.cost.GroupCostModel`) unless the space is given a
``cost_factory``: with :class:`~metaprune.latency.LatencyCostModel` it is the latency table's predicted
latency (``metaprune search --latency-speedup``), and every ``flops_ratio`` of the space below is then
a ratio of predicted latency; the plans it writes still record their true FLOPs ratio.

Every allocator and every trial proposes a vector of keep ratios :math:`p_g`; the space
maps it onto the budget before anything is evaluated, so every trial is feasible. The
projection keeps relative preferences: with pruned fractions :math:`q_g = 1 - p_g` it finds
by bisection the scale :math:`s \\ge 0` with

.. math:: F\\big(\\mathrm{clamp}(1 - s\\,q_g,\\ \\mathrm{floor}_g,\\ 1)\\big) = T,

where :math:`F` is the cost model (analytic FLOPs, or predicted latency) and :math:`T`
the target cost, then rounds to whole channels and corrects the rounding error one
channel at a time until :math:`|F - T| \\le` ``tolerance`` :math:`\\cdot T`.

With ``round_to`` :math:`N > 1` (``metaprune search --round-to 8``) a "channel" above is a unit of
:math:`N` channels (of :math:`\\mathrm{lcm}(N, \\mathrm{step}_g)` for a grouped convolution): every group at
least one unit wide keeps a multiple of it or all of its channels, as ``metaprune prune --round-to``
(:mod:`metaprune.prune.rounding`) does; narrower groups keep their own step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from metaprune.errors import BudgetError, ConfigError
from metaprune.prune.budget import Budget
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.groups import ModelGroups
from metaprune.prune.plan import PrunePlan
from metaprune.prune.rounding import check_round_to

#: Every projected plan is within this fraction of the target FLOPs.
TOLERANCE = 0.02

#: ``ModelGroups -> cost model`` (``sizes``, ``group_names``, ``dense_flops``, ``flops(counts)``), as the engine takes.
CostFactory = Callable[[ModelGroups], Any]


def check_min_keep(min_keep: float) -> None:
    """ConfigError unless ``0 < min_keep <= 1``."""
    if not 0.0 < min_keep <= 1.0:
        raise ConfigError(f"--min-keep must be in (0, 1], got {min_keep}")


class SearchSpace:
    """Keep ratios of the prunable groups of one dense model, with their FLOPs and a budget projection.

    ``min_keep`` is the per-group floor: group :math:`g` keeps at least
    :math:`\\lceil \\mathrm{min\\_keep} \\cdot n_g \\rceil` channels (as :func:`~metaprune.prune.structured.apply_plan` does).
    ``cost_factory`` replaces the FLOPs as the budgeted cost (``budget.flops_ratio`` is then a ratio of
    that cost, e.g. of predicted latency); :attr:`cost_kind` says which (``flops`` or ``latency``).
    ``round_to`` > 1 makes every count a multiple of it (in groups at least that wide; see the module doc).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, budget: Budget, *, min_keep: float = 0.1,
                 criterion: str = "group_l2", cost_factory: CostFactory | None = None, round_to: int = 1):
        check_min_keep(min_keep)
        check_round_to(round_to)
        self.model, self.example_input, self.budget = model, example_input, budget
        self.min_keep, self.criterion, self.round_to = min_keep, criterion, round_to
        self.groups = ModelGroups(model, example_input)
        if not self.groups.groups:
            raise ConfigError(f"{type(model).__name__} has no prunable groups; nothing to search")
        #: the true FLOPs, which the plans record whatever the budgeted cost
        self.flops_model = GroupCostModel(self.groups)
        #: the budgeted cost (FLOPs unless ``cost_factory`` says otherwise)
        self.cost = cost_factory(self.groups) if cost_factory is not None else self.flops_model
        self.cost_kind = "flops" if cost_factory is None else str(getattr(self.cost, "cost_kind", "latency"))
        self.names: list[str] = list(self.cost.group_names)
        self.sizes: torch.Tensor = self.cost.sizes
        #: Structural granularity of each group (grouped convolutions, attention heads).
        self.group_steps = torch.tensor([float(group.step if group.kind == "channel" and size % group.step == 0 else 1)
                                         for group, size in zip(self.groups.groups, self.sizes.tolist())],
                                        dtype=torch.float64)
        #: What counts are multiples of: the group's step, or with ``round_to`` the least common multiple of both
        #: (where the group is at least that wide; a whole group is always allowed).
        self.steps = torch.tensor([float(unit if size >= unit else step) for size, step, unit in (
            (size, int(step), math.lcm(round_to, int(step)))
            for size, step in zip(self.sizes.tolist(), self.group_steps.tolist()))], dtype=torch.float64)
        self.floor_counts = torch.tensor(
            [min(size, math.ceil(max(1, math.ceil(min_keep * size)) / step) * step)
             for size, step in zip(self.sizes.tolist(), self.steps.tolist())], dtype=torch.float64)
        self.floor: torch.Tensor = self.floor_counts / self.sizes
        self.dense_flops = self.cost.dense_flops
        lowest = self.flops_ratio_of_counts(self.floor_counts)
        if lowest > budget.flops_ratio * (1 + TOLERANCE):
            unit = "FLOPs" if self.cost_kind == "flops" else f"{self.cost_kind} (predicted)"
            raise BudgetError(
                f"budget {budget.flops_ratio:.4g} of the dense {unit} is below what min_keep={min_keep}"
                f"{f' and --round-to {round_to}' if round_to > 1 else ''} allow ({lowest:.4g}); raise the budget or "
                f"lower --min-keep{' or --round-to' if round_to > 1 else ''}"
            )

    def __len__(self) -> int:
        return len(self.names)

    def flops_ratio_of_counts(self, keep_counts: torch.Tensor) -> float:
        """The budgeted cost (FLOPs, or predicted latency) of whole-channel keep counts, as a fraction of dense."""
        return self.cost.flops(keep_counts) / self.dense_flops

    def true_flops_ratio_of_counts(self, keep_counts: torch.Tensor) -> float:
        """FLOPs of whole-channel keep counts as a fraction of the dense FLOPs, whatever the budgeted cost."""
        return self.flops_model.flops(keep_counts) / self.flops_model.dense_flops

    def counts_of(self, keep_ratios: torch.Tensor) -> torch.Tensor:
        """Whole channels kept for keep ratios: the nearest multiple of the group's step, or the whole group when
        that is nearer (a group of 20 with ``round_to`` 8 keeps 8, 16 or 20), clamped to ``[floor, size]``."""
        wanted = torch.as_tensor(keep_ratios, dtype=torch.float64) * self.sizes
        counts = torch.round(wanted / self.steps) * self.steps
        counts = torch.where((self.sizes - wanted).abs() < (counts - wanted).abs(), self.sizes, counts)
        return torch.minimum(torch.maximum(counts, self.floor_counts), self.sizes)

    def flops_ratio(self, keep_ratios: torch.Tensor) -> float:
        """FLOPs ratio of a keep-ratio vector (after rounding to whole channels)."""
        return self.flops_ratio_of_counts(self.counts_of(keep_ratios))

    def check(self, keep_ratios: torch.Tensor) -> torch.Tensor:
        """``keep_ratios`` as a float64 vector of the right length with finite entries, else ConfigError."""
        ratios = torch.as_tensor(keep_ratios, dtype=torch.float64).flatten()
        if ratios.numel() != len(self) or not torch.isfinite(ratios).all():
            raise ConfigError(f"a proposal needs {len(self)} finite keep ratios, got {ratios.numel()}")
        return ratios.clamp(0.0, 1.0)

    def project(self, keep_ratios: torch.Tensor, flops_ratio: float | None = None) -> torch.Tensor:
        """Keep ratios (whole channels over sizes) within ``TOLERANCE`` of the target FLOPs ratio.

        ``flops_ratio`` defaults to the budget; the pruned fractions of the proposal are scaled
        by one scalar, so a group the proposal prunes twice as hard stays pruned about twice as hard.
        """
        target = self.budget.flops_ratio if flops_ratio is None else float(flops_ratio)
        proposal = self.check(keep_ratios)
        counts = self.counts_of(proposal)
        if torch.equal(counts / self.sizes, proposal) and self._close(counts, target):
            return proposal  # already on the budget in whole channels (an allocator's plan): keep it exactly
        pruned = 1.0 - torch.maximum(proposal, self.floor)
        if float(pruned.max()) <= 0.0:
            pruned = 1.0 - self.floor  # a dense proposal carries no preference: prune evenly
        pruned = pruned.clamp_min(1e-6)

        def counts_at(scale: float) -> torch.Tensor:
            return self.counts_of((1.0 - scale * pruned).clamp(min=0.0))

        low, high = 0.0, float(((1.0 - self.floor) / pruned).max()) + 1.0
        for _ in range(50):
            middle = (low + high) / 2
            if self.flops_ratio_of_counts(counts_at(middle)) > target:
                low = middle
            else:
                high = middle
        counts = min((counts_at(low), counts_at(high)), key=lambda c: abs(self.flops_ratio_of_counts(c) - target))
        return self._correct(counts, target) / self.sizes

    def _correct(self, counts: torch.Tensor, target: float) -> torch.Tensor:
        """Single-channel moves toward the target, the closest first: rounding to whole channels can jump past it.

        When no move gets closer (one channel of a wide group can be worth several of a narrow
        one's), the move that overshoots least is taken anyway and the walk continues from
        there, never revisiting a state; the closest state seen is returned.
        """
        counts = counts.clone()
        best, best_error = counts.clone(), abs(self.flops_ratio_of_counts(counts) - target)
        seen = {tuple(counts.tolist())}
        for _ in range(int(self.sizes.sum())):
            if self._close(counts, target):
                break
            error = self.flops_ratio_of_counts(counts) - target
            move = self._closest_move(counts, -1.0 if error > 0 else 1.0, target, seen)
            if move is None:
                break
            counts[move[0]] += move[1] * self.steps[move[0]]
            seen.add(tuple(counts.tolist()))
            if abs(self.flops_ratio_of_counts(counts) - target) < best_error:
                best, best_error = counts.clone(), abs(self.flops_ratio_of_counts(counts) - target)
        return best

    def _close(self, counts: torch.Tensor, target: float) -> bool:
        """Within half the tolerance: the analytic cost model may be off by up to 1% from measured FLOPs."""
        return abs(self.flops_ratio_of_counts(counts) - target) <= TOLERANCE * target / 2

    def _closest_move(self, counts: torch.Tensor, step: float, target: float,
                      seen: set[tuple[float, ...]]) -> tuple[int, float] | None:
        """The unvisited in-box move of one step of channels (``step`` = ±1) whose FLOPs are closest to the target."""
        closest, closest_error = None, math.inf
        for index in range(len(self)):
            moved = counts.clone()
            moved[index] += step * self.steps[index]
            if not self.floor_counts[index] <= moved[index] <= self.sizes[index] or tuple(moved.tolist()) in seen:
                continue
            error = abs(self.flops_ratio_of_counts(moved) - target)
            if error < closest_error:
                closest, closest_error = (index, step), error
        return closest

    def feasible(self, keep_ratios: torch.Tensor, flops_ratio: float | None = None) -> bool:
        """Whether ``keep_ratios`` is within ``[floor, 1]`` and ``TOLERANCE`` of the target FLOPs."""
        target = self.budget.flops_ratio if flops_ratio is None else flops_ratio
        ratios = torch.as_tensor(keep_ratios, dtype=torch.float64)
        in_box = bool(((ratios >= self.floor - 1e-9) & (ratios <= 1.0 + 1e-9)).all())
        return in_box and abs(self.flops_ratio(ratios) - target) <= TOLERANCE * target

    def to_plan(self, keep_ratios: torch.Tensor) -> PrunePlan:
        """The structured :class:`PrunePlan` of a keep-ratio vector (ratios are whole channels over sizes)."""
        counts = self.counts_of(keep_ratios)
        ratios = {name: float(count / size) for name, count, size in zip(self.names, counts, self.sizes)}
        return PrunePlan("channel", ratios, self.criterion, "local", self.min_keep, None,
                         round(self.true_flops_ratio_of_counts(counts), 6))

    def ratios_of_plan(self, plan: PrunePlan) -> torch.Tensor:
        """Inverse of :meth:`to_plan` (groups missing from the plan keep everything)."""
        unknown = set(plan.keep_ratios) - set(self.names)
        if unknown:
            raise ConfigError(f"plan names groups this model does not have: {sorted(unknown)[:5]}")
        return torch.tensor([plan.keep_ratios.get(name, 1.0) for name in self.names], dtype=torch.float64)
