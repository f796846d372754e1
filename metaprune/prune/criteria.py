"""Importance criteria: one protocol, many implementations.

A criterion scores the channels of a prunable group (structured pruning) and the single
weights of a layer (unstructured and N:M pruning). Higher means more important. For global
ranking across groups, :meth:`Criterion.normalize` makes scores comparable between groups.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from metaprune.errors import ConfigError
from metaprune.prune.groups import ParamRows


def _per_channel(rows: list[ParamRows], size: int, values: list[torch.Tensor]) -> torch.Tensor:
    total = torch.zeros(size, dtype=torch.float64)
    for part, value in zip(rows, values):
        total.index_add_(0, part.channels, value.to(torch.float64))
    return total


def lamp_scores(squared: torch.Tensor) -> torch.Tensor:
    r"""LAMP (Lee et al., ICLR'21): :math:`s_i = w_i^2 / \sum_{j: w_j^2 \ge w_i^2} w_j^2`.

    Scores lie in (0, 1] and are comparable across layers without further normalisation.
    """
    flat = squared.reshape(-1).to(torch.float64)
    order = torch.argsort(flat)
    tail_sums = torch.flip(torch.cumsum(torch.flip(flat[order], [0]), 0), [0])
    scores = torch.empty_like(flat)
    scores[order] = flat[order] / tail_sums.clamp_min(1e-300)
    return scores.reshape(squared.shape)


class Criterion(ABC):
    """Scores channels and weights; subclasses set :attr:`name`."""

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = False

    @abstractmethod
    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        """Importance of each of the ``size`` channels of a group, from its coupled weights."""

    @abstractmethod
    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Importance of every element of ``weight`` (same shape)."""

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """Scale a group's scores so that global ranking compares groups fairly (mean = 1)."""
        return scores / scores.mean().clamp_min(1e-12)


class RandomCriterion(Criterion):
    """Uniformly random scores from a seeded generator (the 'naive baseline')."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.generator, dtype=torch.float64)

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return torch.rand(weight.shape, generator=self.generator)


class MagnitudeCriterion(Criterion):
    r"""Lp norm of each output filter of the group's root layer: :math:`\|W_{c,:}\|_p`."""

    def __init__(self, p: int):
        self.p = p
        self.name = f"l{p}"  # type: ignore[misc]

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        root = rows[0]
        return _per_channel([root], size, [root.values.abs().pow(self.p).sum(1).pow(1.0 / self.p)])

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs()


class GroupL2Criterion(Criterion):
    r"""Group L2 norm over every weight coupled to a channel (DepGraph-style):
    :math:`s_c = \sqrt{\sum_{W \in \text{group}} \|W_c\|_2^2}`."""

    name = "group_l2"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return _per_channel(rows, size, [part.values.pow(2).sum(1) for part in rows]).sqrt()

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs()


class OutputGroupL2Criterion(GroupL2Criterion):
    r"""Group L2 over the weights that can change the network's output.

    A conv/linear layer that feeds a normalisation layer is scale-invariant per output channel
    (BatchNorm divides the scale away), so in groups that hold a normalisation layer its output
    rows are left out and only the normalisation parameters and the consumers' input columns
    count. Groups without normalisation are scored like :class:`GroupL2Criterion`.
    """

    name = "output_group_l2"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        if any(part.role == "norm" for part in rows):
            rows = [part for part in rows if part.role != "out"]
        return super().channel_scores(rows, size)


class TaylorCriterion(Criterion):
    r"""First-order Taylor estimate of the loss change (Molchanov et al., 2019):
    :math:`s_c = \sum_{W \in \text{group}} \sum |W_c \odot \partial L / \partial W_c|`."""

    name = "taylor"
    needs_gradients = True

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        if any(part.grads is None for part in rows):
            raise ConfigError("the taylor criterion needs gradients: pass a calibration batch")
        return _per_channel(rows, size, [(part.values * part.grads).abs().sum(1) for part in rows])

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        if grad is None:
            raise ConfigError("the taylor criterion needs gradients: pass a calibration batch")
        return (weight.detach() * grad).abs()


class BNScaleCriterion(Criterion):
    r"""Network-slimming score :math:`|\gamma_c|` summed over the group's normalisation layers.

    Groups without a normalisation layer (e.g. an MLP's hidden units) fall back to the group
    L2 norm so that every group can be ranked.
    """

    name = "bn_scale"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        norms = [part for part in rows if part.role == "norm"]
        if not norms:
            return GroupL2Criterion().channel_scores(rows, size)
        return _per_channel(norms, size, [part.values.abs().sum(1) for part in norms])

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise ConfigError("bn_scale scores channels only; use it with --pattern channel")


class LAMPCriterion(Criterion):
    """Layer-adaptive magnitude pruning scores (see :func:`lamp_scores`) on group L2 norms."""

    name = "lamp"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return lamp_scores(GroupL2Criterion().channel_scores(rows, size).pow(2))

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return lamp_scores(weight.detach().pow(2)).to(weight.dtype)

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


CRITERIA = ("random", "l1", "l2", "group_l2", "output_group_l2", "taylor", "bn_scale", "lamp")


def get_criterion(name: str, seed: int = 0) -> Criterion:
    """Build a criterion by name (one of :data:`CRITERIA`)."""
    factories = {
        "random": lambda: RandomCriterion(seed),
        "l1": lambda: MagnitudeCriterion(1),
        "l2": lambda: MagnitudeCriterion(2),
        "group_l2": GroupL2Criterion,
        "output_group_l2": OutputGroupL2Criterion,
        "taylor": TaylorCriterion,
        "bn_scale": BNScaleCriterion,
        "lamp": LAMPCriterion,
    }
    if name not in factories:
        raise ConfigError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return factories[name]()
