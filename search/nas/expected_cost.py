"""Expected FLOPs of the TAS search network and the cost loss with a tolerance band around the budget.

The analytic cost model (:class:`~metaprune.prune.cost.GroupCostModel`) is bilinear in the
kept widths of each term: :math:`F = \\sum_t F_t X_t Y_t + F_{\\mathrm{rest}}` with
:math:`X_t = 1 - \\sum_g a_{tg}(1-\\rho_g)` (output side) and :math:`Y_t = 1 - \\sum_g b_{tg}(1-\\rho_g)`
(input side). With independent width distributions per group and depth distributions per stage,

.. math:: E[F] = \\sum_t F_t\\; P(\\mathrm{block}(t)\\ \\mathrm{runs})\\;
          \\Big(E[X_t]\\,E[Y_t] + \\sum_g a_{tg} b_{tg} \\operatorname{Var}[\\rho_g]\\Big) + F_{\\mathrm{rest}},

the covariance term counting the groups that set both sides of a term. For one-hot
distributions it is the exact FLOPs of the derived network. The architecture loss adds (TAS, Eq. 8)

.. math:: L_{\\mathrm{cost}} = \\begin{cases} \\log(E[F]/T) & E[F] > (1+t)\\,T \\\\
          -\\log(E[F]/T) & E[F] < (1-t)\\,T \\\\ 0 & \\text{otherwise,} \\end{cases}

for target FLOPs :math:`T` and tolerance :math:`t`.
"""

from __future__ import annotations

import torch

from metaprune.errors import ConfigError
from metaprune.search.space import SearchSpace


class ExpectedCost:
    """Differentiable :math:`E[F]` of a search space, optionally with the blocks of searched stages."""

    def __init__(self, space: SearchSpace, blocks: list[str] | None = None):
        cost = space.cost
        self.space = space
        self.term_flops, self.constant = cost.term_flops, cost.constant
        self.out_weights, self.in_weights = cost.removal_weights()
        self.shared = self.out_weights * self.in_weights
        prefixes = sorted(blocks or [], key=len, reverse=True)
        self.term_block = [next((block for block in prefixes if layer.startswith(block + ".")), None)
                           for layer in cost.term_names]

    def __call__(self, ratio_mean: torch.Tensor, ratio_square: torch.Tensor,
                 block_running: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """:math:`E[F]` from per-group :math:`E[\\rho]`, :math:`E[\\rho^2]` and per-block running probabilities."""
        one = torch.ones(1, dtype=torch.float64)
        mean, square = ratio_mean.double(), ratio_square.double()
        out_kept = 1.0 - self.out_weights @ (1.0 - mean)
        in_kept = 1.0 - self.in_weights @ (1.0 - mean)
        products = out_kept * in_kept + self.shared @ (square - mean * mean)
        if block_running:
            running = torch.stack([block_running[block].double() if block else one[0] for block in self.term_block])
            products = products * running
        return (self.term_flops * products).sum() + self.constant


def cost_loss(expected_flops: torch.Tensor, target_flops: float, tolerance: float) -> torch.Tensor:
    """TAS's cost loss: :math:`|\\log(E[F]/T)|` outside the band :math:`[(1-t)T, (1+t)T]`, zero inside."""
    if target_flops <= 0 or not 0 <= tolerance < 1:
        raise ConfigError(f"need target FLOPs > 0 and 0 <= tolerance < 1, got {target_flops}, {tolerance}")
    ratio = expected_flops / target_flops
    if ratio > 1 + tolerance:
        return torch.log(ratio)
    if ratio < 1 - tolerance:
        return -torch.log(ratio)
    return expected_flops * 0.0
