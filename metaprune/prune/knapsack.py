r"""Knapsack allocation (HALP, Shen et al., 2022): keep the most importance per unit of cost.

Structured pruning to a budget is a knapsack: keep channels maximising the summed importance
:math:`\sum_g \sum_{c \le k_g} s_{g,c}` subject to :math:`T(k) \le T^*`. Unlike the global ranking
(which removes the least important channels whatever they cost), the greedy knapsack removes, step
by step, the group's next channel with the lowest ratio

.. math:: \frac{s_{g,\,\text{next}}}{T(k) - T(k - \delta_g e_g)}

of importance to the cost it saves (:math:`\delta_g` the group's channel step), re-evaluating the
saving at the current widths: with a latency predictor as the cost this is HALP's latency-aware
allocation, and channels that are cheap to keep (a latency plateau) stay.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def allocate_knapsack(scores: list[torch.Tensor], cost: Any, target: float, floor: torch.Tensor,
                      steps: torch.Tensor) -> torch.Tensor:
    """Keep counts from greedy importance-per-cost removal until ``cost.flops(counts) <= target``.

    ``scores[g]`` holds group ``g``'s normalised channel importances (one per chunk position when its
    step is above 1); ``floor`` and ``steps`` are each group's minimum count and channel granularity.
    """
    counts = cost.sizes.clone().to(torch.float64)
    ordered = [torch.sort(values.to(torch.float64)).values for values in scores]
    removed = [0] * len(ordered)
    current = cost.flops(counts)
    while current > target:
        best, best_priority, best_cost = None, math.inf, current
        for index, values in enumerate(ordered):
            step = float(steps[index])
            if counts[index] - step < floor[index] or removed[index] >= len(values):
                continue
            counts[index] -= step
            trial = cost.flops(counts)
            counts[index] += step
            saving = current - trial
            priority = float(values[removed[index]]) / saving if saving > 0 else math.inf
            if priority < best_priority or best is None:
                best, best_priority, best_cost = index, priority, trial
        if best is None:
            break
        counts[best] -= float(steps[best])
        removed[best] += 1
        current = best_cost
    return counts
