"""Expected FLOPs of the TAS search network and the cost loss with a tolerance band around the budget.

The analytic cost model (:class:`~metaprune.prune.cost.GroupCostModel`) is bilinear in the keep
ratios: :math:`F = \\sum_\\ell F_\\ell\\,\\rho_{\\mathrm{out}(\\ell)}\\,\\rho_{\\mathrm{in}(\\ell)} + F_{\\mathrm{rest}}`.
With independent width distributions per group and depth distributions per stage,

.. math:: E[F] = \\sum_\\ell F_\\ell\\; P(\\mathrm{block}(\\ell)\\ \\mathrm{runs})\\;
          E[\\rho_{\\mathrm{out}(\\ell)}\\,\\rho_{\\mathrm{in}(\\ell)}] + F_{\\mathrm{rest}},

where the product's expectation is :math:`E[\\rho_{\\mathrm{out}}]\\,E[\\rho_{\\mathrm{in}}]` for two
groups and :math:`E[\\rho^2]` when one group sets both sides. For one-hot distributions it is
the exact FLOPs of the derived network. The architecture loss adds (TAS, Eq. 8)

.. math:: L_{\\mathrm{cost}} = \\begin{cases} \\log(E[F]/T) & E[F] > (1+t)\\,T \\\\
          -\\log(E[F]/T) & E[F] < (1-t)\\,T \\\\ 0 & \\text{otherwise,} \\end{cases}

for target FLOPs :math:`T` and tolerance :math:`t`.
"""

from __future__ import annotations

import torch

from metaprune.errors import ConfigError
from metaprune.flops import flops_by_module
from metaprune.prune.groups import CONV_LINEAR
from metaprune.search.space import SearchSpace


def cost_term_layers(space: SearchSpace) -> list[str]:
    """The layer name of every term of ``space.cost`` (same order as its ``term_flops``)."""
    modules = dict(space.model.named_modules())
    names = [name for name, flops in flops_by_module(space.model, space.example_input).items()
             if flops and (isinstance(modules.get(name), CONV_LINEAR) or name in space.groups.attention)]
    if len(names) != len(space.cost.term_flops):
        raise ConfigError("the cost model's terms do not match the model's layers; rebuild the search space")
    return names


class ExpectedCost:
    """Differentiable :math:`E[F]` of a search space, optionally with the blocks of searched stages."""

    def __init__(self, space: SearchSpace, blocks: list[str] | None = None):
        cost = space.cost
        self.space = space
        self.term_flops, self.term_out, self.term_in = cost.term_flops, cost.term_out, cost.term_in
        self.constant = cost.constant
        self.same_group = (self.term_out == self.term_in) & (self.term_out >= 0)
        layers = cost_term_layers(space)
        prefixes = sorted(blocks or [], key=len, reverse=True)
        self.term_block = [next((block for block in prefixes if layer.startswith(block + ".")), None)
                           for layer in layers]

    def __call__(self, ratio_mean: torch.Tensor, ratio_square: torch.Tensor,
                 block_running: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """:math:`E[F]` from per-group :math:`E[\\rho]`, :math:`E[\\rho^2]` and per-block running probabilities."""
        one = torch.ones(1, dtype=torch.float64)
        mean = torch.cat([ratio_mean.double(), one])
        square = torch.cat([ratio_square.double(), one])
        products = torch.where(self.same_group, square[self.term_out], mean[self.term_out] * mean[self.term_in])
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
