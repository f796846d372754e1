"""DASS's sparse parametric operations: ``ScoredConv2d`` and ``ScoredLinear``, masked by learnable scores.

(Training-time layers of the search. The layer that *runs* a pruned ``nn.Linear`` with a sparse
kernel is :class:`metaprune.kernels.SparseLinear`.)

Each layer keeps a dense weight :math:`W` and a score tensor :math:`S` of the same shape. The
forward pass uses :math:`W \\odot M` with the exact top-:math:`k` mask

.. math:: M_{i} = \\mathbb{1}\\big[\\,|S_i| \\text{ is among the } k \\text{ largest}\\,\\big],\\qquad
          k = \\mathrm{round}(d \\cdot \\mathrm{numel}(W)),

so the weight density is exactly :math:`k / \\mathrm{numel}(W)` for density :math:`d`. The top-:math:`k`
step has no useful derivative; the straight-through estimator passes the mask's gradient to the
scores unchanged, :math:`\\partial L / \\partial S = \\partial L / \\partial M = (\\partial L / \\partial (W \\odot M)) \\odot W`,
so the scores (and with them which weights survive) are trained along with :math:`W`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import ConfigError


def keep_count(numel: int, density: float) -> int:
    """Weights kept at ``density``: ``round(density * numel)``, at least one."""
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"weight density must be in (0, 1], got {density}")
    return max(1, min(numel, round(density * numel)))


class TopKMask(torch.autograd.Function):
    """Exact top-``k`` 0/1 mask of ``|scores|`` with a straight-through backward pass."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, k: int) -> torch.Tensor:
        mask = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
        mask[torch.topk(scores.detach().abs().flatten(), k, sorted=False).indices] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx: Any, grad_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_mask, None


def topk_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """The 0/1 mask keeping the ``keep_count(numel, density)`` largest ``|scores|`` (straight-through)."""
    return TopKMask.apply(scores, keep_count(scores.numel(), density))


class ScoredWeight:
    """Mixin for a layer with ``weight``: adds ``scores``, ``density`` and the masked weight."""

    weight: nn.Parameter

    def _init_scores(self, density: float) -> None:
        self.density = density
        self.scores = nn.Parameter(self.weight.detach().abs().clone())

    @property
    def density(self) -> float:
        """Fraction of the weights kept, in (0, 1]."""
        return self._density

    @density.setter
    def density(self, value: float) -> None:
        keep_count(1, value)  # validates
        self._density = float(value)

    def mask(self) -> torch.Tensor:
        """The current top-k mask of the scores."""
        return topk_mask(self.scores, self.density)

    def masked_weight(self) -> torch.Tensor:
        """:math:`W \\odot M`, differentiable in both ``weight`` and ``scores``."""
        return self.weight * self.mask()

    def freeze_mask(self) -> None:
        """Stop training the scores (the mask stays as it is; weights still train)."""
        self.scores.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={self.density:.4g}"  # type: ignore[misc]


class ScoredConv2d(ScoredWeight, nn.Conv2d):
    """``nn.Conv2d`` whose weight is masked to an exact density by learnable scores."""

    def __init__(self, *args: Any, density: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_scores(density)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(inputs, self.masked_weight(), self.bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, density: float) -> ScoredConv2d:
        """A scored copy of ``conv`` (same weights; scores start at ``|W|``, i.e. a magnitude mask)."""
        scored = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode, density=density)
        scored.load_state_dict({**conv.state_dict(), "scores": conv.weight.detach().abs().clone()})
        return scored


class ScoredLinear(ScoredWeight, nn.Linear):
    """``nn.Linear`` whose weight is masked to an exact density by learnable scores."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, density: float = 0.1):
        super().__init__(in_features, out_features, bias)
        self._init_scores(density)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, self.masked_weight(), self.bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, density: float) -> ScoredLinear:
        """A scored copy of ``linear`` (scores start at ``|W|``)."""
        scored = cls(linear.in_features, linear.out_features, linear.bias is not None, density=density)
        scored.load_state_dict({**linear.state_dict(), "scores": linear.weight.detach().abs().clone()})
        return scored


def score_layers(model: nn.Module, density: float) -> nn.Module:
    """Give every ``Conv2d``/``Linear`` of ``model`` learnable scores masking it to ``density`` (in place).

    Dense layers are replaced by their scored versions (scores start at ``|W|``); layers that
    are scored already keep their scores and take the new density.
    """
    keep_count(1, density)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ScoredWeight):
                child.density = density
            elif isinstance(child, nn.Conv2d):
                setattr(module, child_name, ScoredConv2d.from_dense(child, density))
            elif isinstance(child, nn.Linear):
                setattr(module, child_name, ScoredLinear.from_dense(child, density))
    return model


def materialize(model: nn.Module) -> nn.Module:
    """Replace every scored layer by a plain one holding :math:`W \\odot M` (zeros where pruned), in place.

    The result is a plain network that :func:`metaprune.flops.effective_flops` and
    :func:`~metaprune.flops.count_nonzero_params` measure as sparse.
    """
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ScoredConv2d):
                dense = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                                  padding=child.padding, dilation=child.dilation, groups=child.groups,
                                  bias=child.bias is not None, padding_mode=child.padding_mode)
            elif isinstance(child, ScoredLinear):
                dense = nn.Linear(child.in_features, child.out_features, child.bias is not None)
            else:
                continue
            with torch.no_grad():
                dense.weight.copy_(child.masked_weight())
                if child.bias is not None:
                    dense.bias.copy_(child.bias)
            setattr(module, child_name, dense)
    return model


def weight_density(model: nn.Module) -> float:
    """Kept fraction of the Conv2d/Linear weights of ``model`` (masked layers count their mask)."""
    kept = total = 0
    for module in model.modules():
        if isinstance(module, ScoredWeight):
            kept += int(module.mask().count_nonzero())
            total += module.weight.numel()
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            kept += int(module.weight.count_nonzero())
            total += module.weight.numel()
    if total == 0:
        raise ConfigError(f"{type(model).__name__} has no Conv2d/Linear weights")
    return kept / total


__all__ = ["ScoredConv2d", "ScoredLinear", "ScoredWeight", "TopKMask", "keep_count", "materialize", "score_layers",
           "topk_mask", "weight_density"]
