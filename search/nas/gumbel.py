"""Gumbel-softmax sampling of two candidates with renormalised weights, and TAS's temperature schedule.

With logits :math:`\\alpha` over the candidates of one layer and Gumbel noise
:math:`g_j = -\\log(-\\log u_j)`, :math:`u_j \\sim U(0, 1)`,

.. math:: \\hat p_j = \\mathrm{softmax}\\big((\\alpha + g) / \\tau\\big)_j,\\qquad
          I = \\mathrm{top}_2(\\hat p),\\qquad w_i = \\hat p_i / \\textstyle\\sum_{i' \\in I} \\hat p_{i'} .

Only the two sampled candidates are evaluated (their outputs weighted by :math:`w`), yet the
gradient reaches every logit through the softmax. The temperature :math:`\\tau` decays
linearly over the search (TAS: from 10 to 0.1), so the samples approach the argmax.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.errors import ConfigError


def gumbel_top2(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two candidates sampled from ``logits`` and their renormalised weights (differentiable)."""
    if temperature <= 0:
        raise ConfigError(f"Gumbel-softmax temperature must be > 0, got {temperature}")
    if logits.dim() != 1 or logits.numel() == 0:
        raise ConfigError("gumbel_top2 needs a non-empty vector of logits")
    if logits.numel() == 1:
        return torch.zeros(1, dtype=torch.long), torch.ones(1) + 0.0 * logits
    uniform = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-10)
    perturbed = torch.softmax((logits - torch.log(-torch.log(uniform))) / temperature, dim=0)
    chosen = torch.topk(perturbed.detach(), 2).indices
    picked = perturbed[chosen]
    return chosen, picked / picked.sum()


def linear_temperature(epoch: int, epochs: int, start: float = 10.0, end: float = 0.1) -> float:
    """Temperature at ``epoch`` (0-based) of ``epochs``: ``start`` at the first, ``end`` at the last."""
    if epochs < 1 or not 0 < end <= start:
        raise ConfigError(f"need epochs >= 1 and 0 < end <= start, got epochs={epochs}, start={start}, end={end}")
    if epochs == 1:
        return end
    return start - (start - end) * epoch / (epochs - 1)


Selection = tuple[torch.Tensor, torch.Tensor]


class CandidateLogits(nn.Module):
    """Independent categorical distributions (one logit vector each) with the current sampled selection.

    :attr:`selection` holds, per distribution, the candidate indices the next forward pass
    evaluates and their weights: two Gumbel-softmax samples while searching, the argmax
    with weight one when evaluating.
    """

    def __init__(self, sizes: list[int]):
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"every distribution needs at least one candidate, got sizes {sizes}")
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(size)) for size in sizes])
        self.selection: list[Selection] = self.argmax_selection()

    def probabilities(self) -> list[torch.Tensor]:
        """Softmax of every logit vector (differentiable)."""
        return [torch.softmax(logits, dim=0) for logits in self.logits]

    def argmax_selection(self) -> list[Selection]:
        """Every distribution at its most probable candidate, with weight one."""
        return [(logits.detach().argmax().reshape(1), torch.ones(1)) for logits in self.logits]

    def sample(self, temperature: float) -> None:
        """Draw two candidates per distribution (:func:`gumbel_top2`) for the next forward passes."""
        self.selection = [gumbel_top2(logits, temperature) for logits in self.logits]

    def use_argmax(self) -> None:
        """Evaluate the most probable candidates."""
        self.selection = self.argmax_selection()
