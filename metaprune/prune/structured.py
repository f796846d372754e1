"""Structured pruning to a FLOPs budget: score groups, allocate keep counts, remove channels.

Allocation is either *global* (one ranking of mean-normalised channel scores across all
groups; the lowest go first) or *local* (one keep ratio for every group). Either way a
bisection on the analytic :class:`~metaprune.prune.cost.GroupCostModel` finds the amount of
pruning whose FLOPs are closest to the target, and every group keeps at least
``ceil(min_keep * dense_size)`` channels so no layer collapses.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import BudgetError, ConfigError, PruneError
from metaprune.inputs import output_signature, run_model
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.criteria import Criterion
from metaprune.prune.groups import ModelGroups, PrunableGroup, check_forward
from metaprune.prune.knapsack import allocate_knapsack
from metaprune.prune.plan import RANKINGS, PrunePlan
from metaprune.prune.rounding import check_round_to, round_counts

#: ``(inputs, targets)`` or ``(inputs, targets, loss_fn)``: a batch that gradient criteria score on.
#: ``inputs`` has any structure :func:`~metaprune.inputs.run_model` accepts; ``loss_fn(output, targets)``
#: defaults to the cross-entropy of a logits tensor.
Calibration = tuple
#: Builds the cost model that allocation prunes against from a model's groups (default: its FLOPs,
#: :class:`~metaprune.prune.cost.GroupCostModel`); anything with ``sizes``, ``dense_flops`` and ``flops(counts)``.
CostFactory = Callable[[ModelGroups], Any]


def calibration_loss(model: nn.Module, calibration: Calibration | None) -> torch.Tensor:
    """The loss of ``model`` on a calibration batch, for gradient criteria (Taylor, regrowth)."""
    if calibration is None:
        raise ConfigError("this criterion needs gradients: pass a calibration batch (inputs, targets)")
    if not isinstance(calibration, (tuple, list)) or len(calibration) not in (2, 3):
        raise ConfigError("a calibration batch is (inputs, targets) or (inputs, targets, loss_fn)")
    inputs, targets, *rest = calibration
    output = run_model(model, inputs)
    if rest and rest[0] is not None:
        loss = rest[0](output, targets)
    elif isinstance(output, torch.Tensor):
        loss = F.cross_entropy(output, targets)
    else:
        raise ConfigError(f"gradient criteria need a loss: {type(model).__name__} returns a {type(output).__name__}, "
                          "not logits; pass loss_fn=callable(output, targets) -> scalar tensor")
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ConfigError("loss_fn must return a scalar tensor")
    return loss


def _accumulate_gradients(model: nn.Module, calibration: Calibration | None) -> None:
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            calibration_loss(model, calibration).backward()
    finally:
        model.train(was_training)


def score_groups(
    groups: ModelGroups, criterion: Criterion, calibration: Calibration | None = None
) -> dict[str, torch.Tensor]:
    """Raw criterion scores for every channel (or head) of every group."""
    if criterion.needs_gradients:
        _accumulate_gradients(groups.model, calibration)
    try:
        return {group.name: criterion.channel_scores(groups.rows(group), groups.current_size(group)) for group in groups.groups}
    finally:
        if criterion.needs_gradients:
            groups.model.zero_grad(set_to_none=True)


def _prunable(groups: ModelGroups, pattern: str) -> list[PrunableGroup]:
    if pattern == "head":
        selected = [group for group in groups.groups if group.kind == "head"]
        if not selected:
            raise ConfigError("pattern 'head' needs attention modules with fused qkv; this model has none")
        return selected
    return groups.groups


def _steps(groups: ModelGroups) -> torch.Tensor:
    """Each group's channel granularity (see :attr:`PrunableGroup.step`), 1 where its size no longer divides."""
    return torch.tensor([float(group.step if groups.current_size(group) % group.step == 0 else 1)
                         for group in groups.groups], dtype=torch.float64)


def _round_up(count: float, step: float) -> float:
    return math.ceil(count / step) * step


def _min_counts(groups: ModelGroups, prunable: list[PrunableGroup], min_keep: float, dense_sizes: dict[str, int]) -> torch.Tensor:
    counts = []
    for group, step in zip(groups.groups, _steps(groups).tolist()):
        size = groups.current_size(group)
        if group in prunable:
            counts.append(min(size, _round_up(max(1, math.ceil(min_keep * dense_sizes.get(group.name, size))), step)))
        else:
            counts.append(size)
    return torch.tensor(counts, dtype=torch.float64)


def _closest(candidates: list[tuple[float, torch.Tensor]], target: float) -> torch.Tensor:
    return min(candidates, key=lambda pair: abs(pair[0] - target))[1]


def allocate_global(
    groups: ModelGroups, scores: dict[str, torch.Tensor], criterion: Criterion, cost: GroupCostModel,
    target_flops: float, floor: torch.Tensor,
) -> torch.Tensor:
    """Keep counts from one global ranking of normalised scores, closest to ``target_flops``.

    A group with channel granularity ``step`` takes part with one score per chunk position
    (the mean over its chunks), and each of its removals takes ``step`` channels.
    """
    current = cost.sizes.clone()
    steps = _steps(groups)
    values, owners = [], []
    for index, group in enumerate(groups.groups):
        step = int(steps[index])
        removable = int(current[index] - floor[index]) // step
        if removable <= 0:
            continue
        normalised = criterion.normalize(scores[group.name].to(torch.float64))
        if step > 1:
            normalised = normalised.reshape(step, -1).mean(0)
        values.append(torch.sort(normalised).values[:removable])
        owners.append(torch.full((removable,), index, dtype=torch.long))
    if not values:
        return current
    order = torch.argsort(torch.cat(values), stable=True)
    owners_sorted = torch.cat(owners)[order]

    def counts_after(removed: int) -> torch.Tensor:
        return current - torch.bincount(owners_sorted[:removed], minlength=len(current)).to(torch.float64) * steps

    low, high = 0, len(owners_sorted)
    while low < high:
        middle = (low + high) // 2
        if cost.flops(counts_after(middle)) <= target_flops:
            high = middle
        else:
            low = middle + 1
    filled = _fill_back(cost, counts_after(low), owners_sorted[:low], target_flops, steps)
    options = [(cost.flops(counts_after(max(0, low - 1))), counts_after(max(0, low - 1))), (cost.flops(filled), filled)]
    return _closest(options, target_flops)


def _chunk_scores(groups: ModelGroups, scores: dict[str, torch.Tensor], criterion: Criterion) -> list[torch.Tensor]:
    """Each group's normalised scores, one per chunk position (the mean over its ``step`` chunks)."""
    chunked = []
    for group, step in zip(groups.groups, _steps(groups).tolist()):
        normalised = criterion.normalize(scores[group.name].to(torch.float64))
        chunked.append(normalised.reshape(int(step), -1).mean(0) if step > 1 else normalised)
    return chunked


def _fill_back(cost: GroupCostModel, counts: torch.Tensor, removed_owners: torch.Tensor, target_flops: float,
               steps: torch.Tensor) -> torch.Tensor:
    """Give back removed channels, most important first, while FLOPs stay under the target.

    A prefix of the global ranking can overshoot by a large step when the next channel
    belongs to a wide coupled group (a residual stream); cheaper channels further down
    the ranking then close the gap.
    """
    flops = cost.flops(counts)
    for owner in reversed(removed_owners.tolist()):
        if target_flops - flops <= 0.002 * target_flops:
            break
        counts[owner] += steps[owner]
        trial = cost.flops(counts)
        if trial <= target_flops:
            flops = trial
        else:
            counts[owner] -= steps[owner]
    return counts


def allocate_local(cost: GroupCostModel, target_flops: float, floor: torch.Tensor, dense: torch.Tensor,
                   steps: torch.Tensor | None = None) -> torch.Tensor:
    """Keep counts from one keep ratio shared by every group (in multiples of each group's step)."""
    current = cost.sizes
    steps = steps if steps is not None else torch.ones_like(current)

    def counts_at(ratio: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(torch.round(ratio * dense / steps) * steps, floor), current)

    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if cost.flops(counts_at(middle)) <= target_flops:
            low = middle
        else:
            high = middle
    options = [(cost.flops(counts_at(r)), counts_at(r)) for r in (low, high)]
    return _closest(options, target_flops)


def remove_lowest(groups: ModelGroups, scores: dict[str, torch.Tensor], keep_counts: dict[str, int]) -> None:
    """Physically remove, in each group, the channels with the lowest scores beyond ``keep_counts``
    (in whole chunks for groups with a channel granularity, see :meth:`ModelGroups.removal`)."""
    for group in groups.groups:
        size, keep = groups.current_size(group), keep_counts.get(group.name)
        if keep is None or keep >= size:
            continue
        groups.remove(group, groups.removal(group, scores[group.name], size - keep))


def remove_checked(groups: ModelGroups, scores: dict[str, torch.Tensor], keep_counts: dict[str, int]) -> None:
    """:func:`remove_lowest`, then run the example input through the pruned model.

    If the model no longer runs or returns another output structure or shape, it is
    restored to its state before the removal and a PruneError names the failing module:
    structured pruning never hands back a broken model.
    """
    model = groups.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        expected = output_signature(run_model(model, groups.example_input))
    model.train(was_training)
    backup = copy.deepcopy(model)
    history = len(groups.history)
    try:
        remove_lowest(groups, scores, keep_counts)
        check_forward(model, groups.example_input, expected)
    except Exception as error:
        model.__dict__.clear()
        model.__dict__.update(backup.__dict__)
        del groups.history[history:]
        if isinstance(error, PruneError):
            raise
        raise PruneError(f"torch-pruning could not remove channels from {type(model).__name__}: "
                         f"{str(error).splitlines()[0]}; the model was left unchanged") from error


def prune_to_flops(
    model: nn.Module,
    example_input: torch.Tensor,
    target_flops: float,
    criterion: Criterion,
    *,
    ranking: str = "global",
    min_keep: float = 0.1,
    pattern: str = "channel",
    calibration: Calibration | None = None,
    dense_sizes: dict[str, int] | None = None,
    ignored_layers: list[str] | None = None,
    cost_factory: CostFactory | None = None,
    round_to: int = 1,
) -> tuple[ModelGroups, dict[str, int]]:
    """Remove channels from ``model`` in place until its FLOPs are closest to ``target_flops``.

    ``dense_sizes`` (group name → channels in the dense model) anchors ``min_keep`` when
    pruning an already-pruned model, as iterative schedules do. ``cost_factory`` replaces the
    FLOPs cost model (e.g. by a latency predictor; ``target_flops`` is then in its unit) and
    ``round_to`` > 1 keeps multiples of it in every group (:mod:`metaprune.prune.rounding`).
    Returns the groups (with the removal history) and the keep count of every group.
    """
    if ranking not in RANKINGS:
        raise ConfigError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
    groups = ModelGroups(model, example_input, ignored_layers)
    if not groups.groups:
        raise PruneError(f"{type(model).__name__} has no channel group torch-pruning can remove (its layers are not "
                         "Conv/Linear/attention modules it knows, or all of them make the output); "
                         "use --pattern unstructured or n:m")
    dense_sizes = dense_sizes or {group.name: groups.current_size(group) for group in groups.groups}
    cost = cost_factory(groups) if cost_factory is not None else GroupCostModel(groups)
    prunable = _prunable(groups, pattern)
    floor = _min_counts(groups, prunable, min_keep, dense_sizes)
    lowest = cost.flops(floor)
    if lowest > target_flops * 1.02:
        raise BudgetError(
            f"budget of {target_flops:.4g} FLOPs is below what min_keep={min_keep} allows ({lowest:.4g}); "
            "raise the budget or lower --min-keep"
        )
    scores = score_groups(groups, criterion, calibration)
    if ranking == "global":
        counts = allocate_global(groups, scores, criterion, cost, target_flops, floor)
    elif ranking == "knapsack":
        counts = allocate_knapsack(_chunk_scores(groups, scores, criterion), cost, target_flops, floor, _steps(groups))
    else:
        dense = torch.tensor([float(dense_sizes.get(g.name, groups.current_size(g))) for g in groups.groups])
        counts = allocate_local(cost, target_flops, floor, dense, _steps(groups))
    counts = round_counts(counts, cost.sizes, floor, _steps(groups), round_to, cost, target_flops)
    keep_counts = {group.name: int(count) for group, count in zip(groups.groups, counts)}
    remove_checked(groups, scores, keep_counts)
    return groups, keep_counts


def plan_from_counts(
    keep_counts: dict[str, int], dense_sizes: dict[str, int], *, pattern: str, criterion: str, ranking: str,
    min_keep: float, flops_ratio: float | None,
) -> PrunePlan:
    """The recipe that reproduces a structured pruning: keep ratios relative to the dense sizes."""
    ratios = {name: keep_counts[name] / dense_sizes[name] for name in keep_counts}
    return PrunePlan(pattern, ratios, criterion, ranking, min_keep, None, flops_ratio)


def apply_plan(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: PrunePlan,
    criterion: Criterion,
    calibration: Calibration | None = None,
    ignored_layers: list[str] | None = None,
) -> ModelGroups:
    """Apply a structured plan's keep ratios to a dense ``model`` in place, choosing channels by ``criterion``."""
    if plan.pattern not in ("channel", "head"):
        raise ConfigError(f"apply_plan handles structured patterns; got {plan.pattern!r}")
    groups = ModelGroups(model, example_input, ignored_layers)
    unknown = set(plan.keep_ratios) - set(groups.by_name)
    if unknown:
        raise ConfigError(f"plan names groups this model does not have: {sorted(unknown)[:5]}")
    scores = score_groups(groups, criterion, calibration)
    keep_counts = {}
    for name, ratio in plan.keep_ratios.items():
        group = groups.by_name[name]
        size = groups.current_size(group)
        step = group.step if size % group.step == 0 else 1
        keep = max(1, math.ceil(plan.min_keep * size), round(ratio * size))
        keep_counts[name] = min(size, _round_up(keep, step))
    remove_checked(groups, scores, keep_counts)
    return groups


class StructuredPruner:
    """Structured pruning as a step that schedules can call repeatedly (see :mod:`metaprune.prune.schedules`).

    ``prune_to(model, flops_ratio)`` removes channels until the model's FLOPs are closest to
    ``flops_ratio`` times the *dense* FLOPs measured at construction; the removal history
    accumulates in :attr:`history` and the latest keep counts in :attr:`keep_counts`. With a
    ``cost_factory`` (a latency predictor) the ratio is of that cost instead of the FLOPs.
    """

    uses_masks = False

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        criterion: Criterion,
        *,
        ranking: str = "global",
        min_keep: float = 0.1,
        pattern: str = "channel",
        calibration: Calibration | None = None,
        ignored_layers: list[str] | None = None,
        cost_factory: CostFactory | None = None,
        round_to: int = 1,
    ):
        check_round_to(round_to)
        dense_groups = ModelGroups(model, example_input, ignored_layers)
        self.dense_sizes = {group.name: dense_groups.current_size(group) for group in dense_groups.groups}
        self.cost_factory, self.round_to = cost_factory, round_to
        self.dense_flops = (cost_factory or GroupCostModel)(dense_groups).dense_flops
        self.example_input, self.criterion, self.ranking = example_input, criterion, ranking
        self.min_keep, self.pattern, self.calibration, self.ignored_layers = min_keep, pattern, calibration, ignored_layers
        self.history: list[dict] = []
        self.keep_counts = dict(self.dense_sizes)

    def prune_to(self, model: nn.Module, flops_ratio: float) -> None:
        """Prune ``model`` in place to ``flops_ratio`` of the dense FLOPs (no-op if already below)."""
        groups, counts = prune_to_flops(
            model, self.example_input, flops_ratio * self.dense_flops, self.criterion, ranking=self.ranking,
            min_keep=self.min_keep, pattern=self.pattern, calibration=self.calibration,
            dense_sizes=self.dense_sizes, ignored_layers=self.ignored_layers, cost_factory=self.cost_factory,
            round_to=self.round_to,
        )
        self.history.extend(groups.history)
        self.keep_counts.update(counts)

    def plan(self, flops_ratio: float | None = None) -> PrunePlan:
        """The plan that reproduces the current pruning."""
        return plan_from_counts(
            self.keep_counts, self.dense_sizes, pattern=self.pattern, criterion=self.criterion.name,
            ranking=self.ranking, min_keep=self.min_keep, flops_ratio=flops_ratio,
        )


class PlanPruner:
    """Re-applies a saved structured :class:`PrunePlan` (a recipe) instead of allocating anew.

    ``prune_to`` ignores its ratio: the plan's keep ratios already encode the budget.
    """

    uses_masks = False

    def __init__(self, plan: PrunePlan, example_input: torch.Tensor, criterion: Criterion,
                 calibration: Calibration | None = None):
        self.recipe, self.example_input, self.criterion, self.calibration = plan, example_input, criterion, calibration
        self.history: list[dict] = []
        self._applied = False

    def prune_to(self, model: nn.Module, flops_ratio: float) -> None:
        """Apply the plan once; later calls are no-ops."""
        if not self._applied:
            groups = apply_plan(model, self.example_input, self.recipe, self.criterion, self.calibration)
            self.history.extend(groups.history)
            self._applied = True

    def plan(self, flops_ratio: float | None = None) -> PrunePlan:
        """The recipe that was applied."""
        return self.recipe
