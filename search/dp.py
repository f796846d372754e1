"""Rate-distortion allocation by dynamic programming, under a FLOPs budget.

After Xu et al., "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in Deep
Neural Networks" (ICCV'23): the output distortion of pruning several layers is close to the
*sum* of the distortions of pruning each alone, so per-group curves :math:`D_g(\\ell)`
measured on a calibration batch turn allocation into a knapsack solved exactly by a
dynamic program. The paper budgets parameters, which are additive over layers. FLOPs are
not: a layer costs :math:`F_\\ell\\,\\rho_{\\mathrm{out}}\\rho_{\\mathrm{in}}`, bilinear in two
groups' widths. We use each group's *marginal* reduction
:math:`c_g(\\ell) = F(\\text{dense}) - F(\\text{only } g \\text{ at level } \\ell)` as its
additive cost. Since :math:`1-ab \\le (1-a)+(1-b)`, the sum overestimates the joint reduction;
we re-solve a few times with the requirement raised by the measured shortfall, and the
budget projection of :class:`~metaprune.search.space.SearchSpace` corrects what remains.

The program over discretised reduction :math:`b` ("at least :math:`b` bins removed") is

.. math:: V_g(b) = \\min_\\ell \\big[ D_g(\\ell) + V_{g-1}(\\max(0, b - c_g(\\ell))) \\big],\\qquad V_0(b) = [b = 0]\\cdot 0 + [b > 0]\\cdot\\infty .
"""

from __future__ import annotations

import hashlib
import weakref

import torch

from metaprune.errors import SearchError
from metaprune.search.allocators import ALLOCATORS, Allocator, Calibration
from metaprune.search.distortion import MaskedModel
from metaprune.search.space import SearchSpace


def solve_rate_distortion(distortion: torch.Tensor, reduction: torch.Tensor, required: int) -> torch.Tensor:
    """Level per group minimising ``sum(distortion[g, level])`` subject to ``sum(reduction[g, level]) >= required``.

    ``distortion`` is ``[groups, levels]`` (float), ``reduction`` the same shape in whole bins
    (non-negative ints). Exact; if no choice reaches ``required`` the largest reduction wins ties
    toward it (the program is capped at ``required``). Cost :math:`O(G\\,L\\,B)`, vectorised over
    levels and bins.
    """
    if distortion.shape != reduction.shape or distortion.dim() != 2:
        raise SearchError(f"distortion and reduction must both be [groups, levels], got {tuple(distortion.shape)} "
                          f"and {tuple(reduction.shape)}")
    if bool((reduction < 0).any()):
        raise SearchError("reductions must be non-negative whole bins (a level cannot add FLOPs)")
    required = max(0, int(required))
    bins = torch.arange(required + 1)
    value = torch.full((required + 1,), float("inf"), dtype=torch.float64)
    value[0] = 0.0
    choices = []
    for group_distortion, group_reduction in zip(distortion.double(), reduction.long()):
        previous = (bins[None, :] - group_reduction[:, None]).clamp_min(0)  # [levels, bins]
        candidates = group_distortion[:, None] + value[previous]
        value, best = candidates.min(dim=0)
        choices.append(best)
    if not torch.isfinite(value[required]):
        reachable = torch.nonzero(torch.isfinite(value)).max()
        required = int(reachable)
    levels = torch.empty(len(choices), dtype=torch.long)
    remaining = required
    for group in range(len(choices) - 1, -1, -1):
        level = int(choices[group][remaining])
        levels[group] = level
        remaining = max(0, remaining - int(reduction[group, level]))
    return levels


#: Distortion curves by search space (dropped with it) and by (levels, samples, calibration batch).
_CURVES: weakref.WeakKeyDictionary[SearchSpace, dict[tuple, tuple[torch.Tensor, torch.Tensor]]] = weakref.WeakKeyDictionary()


@ALLOCATORS.register("dp")
class RateDistortionAllocator(Allocator):
    """Per-group distortion curves + the dynamic program of :func:`solve_rate_distortion`.

    ``levels`` keep counts per group, evenly spaced from the floor to the full width;
    ``bins`` discretise the required FLOPs reduction; ``samples`` calibration inputs.
    """

    name = "dp"

    def __init__(self, levels: int = 12, bins: int = 1000, samples: int = 16, refinements: int = 3):
        self.levels, self.bins, self.samples, self.refinements = levels, bins, samples, refinements

    def level_counts(self, space: SearchSpace) -> torch.Tensor:
        """``[groups, levels]`` keep counts, from each group's floor to its size."""
        steps = torch.linspace(0.0, 1.0, self.levels, dtype=torch.float64)
        return torch.round(space.floor_counts[:, None] + (space.sizes - space.floor_counts)[:, None] * steps[None, :])

    def curves(self, space: SearchSpace, calibration: Calibration) -> tuple[torch.Tensor, torch.Tensor]:
        """(distortion, marginal FLOPs-ratio reduction), both ``[groups, levels]``, one group pruned at a time.

        Measured once per space, calibration batch, levels and samples (a search that enqueues the
        DP plan as a baseline asks again for the same curves).
        """
        inputs = calibration[0][: self.samples].detach().contiguous()
        key = (self.levels, tuple(inputs.shape), hashlib.sha1(inputs.cpu().numpy().tobytes()).hexdigest())
        cached = _CURVES.setdefault(space, {})
        if key not in cached:
            cached[key] = self._measure_curves(space, calibration)
        return cached[key]

    def _measure_curves(self, space: SearchSpace, calibration: Calibration) -> tuple[torch.Tensor, torch.Tensor]:
        counts = self.level_counts(space)
        groups, levels = counts.shape
        variants = space.sizes.repeat(groups * levels, 1)
        rows = torch.arange(groups * levels)
        variants[rows, rows // levels] = counts.flatten()
        inputs, targets = calibration
        masked = MaskedModel(space, (inputs[: self.samples], targets[: self.samples]))
        distortion = masked.distortion(variants).reshape(groups, levels)
        reduction = torch.tensor([1.0 - space.flops_ratio_of_counts(row) for row in variants]).reshape(groups, levels)
        return distortion, reduction

    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        if calibration is None:
            raise SearchError("the dp allocator measures distortion curves: pass a calibration batch")
        counts = self.level_counts(space)
        distortion, reduction = self.curves(space, calibration)
        target = space.budget.flops_ratio
        required = 1.0 - target
        proposal = space.sizes.clone()
        for _ in range(self.refinements):
            unit = max(required, 1e-9) / self.bins
            levels = solve_rate_distortion(distortion, torch.round(reduction / unit).clamp_min(0).long(), self.bins)
            proposal = counts[torch.arange(len(space)), levels]
            shortfall = space.flops_ratio_of_counts(proposal) - target
            if abs(shortfall) <= 0.005 * target:
                break
            required += shortfall
        return proposal / space.sizes
