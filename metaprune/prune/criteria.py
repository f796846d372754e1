"""Importance criteria: one protocol, many implementations.

A criterion scores the channels of a prunable group (structured pruning) and the single
weights of a layer (unstructured and N:M pruning). Higher means more important. For global
ranking across groups, :meth:`Criterion.normalize` makes scores comparable between groups.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.groups import ParamRows
from metaprune.registry import Registry

#: Every criterion by name. A criterion factory takes keyword options (``seed`` is offered to
#: all; others, such as the metanetwork's ``metanet``, come from the command line).
CRITERIA: Registry[Callable[..., Criterion]] = Registry("criterion", plural="criteria")
register_criterion = CRITERIA.register


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

    def prepare(self, model: nn.Module, example_input: torch.Tensor, loaders: tuple) -> tuple[nn.Module, dict[str, Any]]:
        """Turn the dense copy into the model to prune, before any scoring (default: unchanged).

        ``loaders`` are the (train, val, test) loaders of the task. Returns the model to prune
        and figures for the report's ``extra``. A criterion that rewrites weights first (the
        metanetwork's) overrides this; the engine calls it without knowing which criterion it is.
        """
        return model, {}


@register_criterion("random")
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

    p: ClassVar[int]

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        root = rows[0]
        return _per_channel([root], size, [root.values.abs().pow(self.p).sum(1).pow(1.0 / self.p)])

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs()


@register_criterion("l1")
class L1Criterion(MagnitudeCriterion):
    """L1 norm of each output filter."""

    name = "l1"
    p = 1


@register_criterion("l2")
class L2Criterion(MagnitudeCriterion):
    """L2 norm of each output filter."""

    name = "l2"
    p = 2


@register_criterion("group_l2")
class GroupL2Criterion(Criterion):
    r"""Group L2 norm over every weight coupled to a channel (DepGraph-style):
    :math:`s_c = \sqrt{\sum_{W \in \text{group}} \|W_c\|_2^2}`."""

    name = "group_l2"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return _per_channel(rows, size, [part.values.pow(2).sum(1) for part in rows]).sqrt()

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs()


@register_criterion("output_group_l2")
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


@register_criterion("taylor")
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


@register_criterion("bn_scale")
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


@register_criterion("lamp")
class LAMPCriterion(Criterion):
    """Layer-adaptive magnitude pruning scores (see :func:`lamp_scores`) on group L2 norms."""

    name = "lamp"

    def channel_scores(self, rows: list[ParamRows], size: int) -> torch.Tensor:
        return lamp_scores(GroupL2Criterion().channel_scores(rows, size).pow(2))

    def weight_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return lamp_scores(weight.detach().pow(2)).to(weight.dtype)

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


def _parameters(factory: Callable[..., Criterion]) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(factory).parameters


def check_criterion_options(name: str, options: Mapping[str, Any]) -> None:
    """ConfigError unless ``name`` is registered and takes exactly the given ``options``.

    Options are named as on the command line in the messages (``metanet`` is ``--metanet``).
    """
    parameters = _parameters(CRITERIA.get(name))
    for option in options:
        if option not in parameters:
            owners = [other for other, factory in CRITERIA.items() if option in _parameters(factory)]
            owned = f"--criterion {' / '.join(owners)}" if owners else "no registered criterion"
            raise ConfigError(f"--{option.replace('_', '-')} goes with {owned}, not with --criterion {name}")
    for parameter in parameters.values():
        if parameter.default is inspect.Parameter.empty and parameter.name not in options and parameter.name != "seed":
            raise ConfigError(f"--criterion {name} needs --{parameter.name.replace('_', '-')} (see --help)")


def standalone_criteria() -> tuple[str, ...]:
    """Names of the criteria that need no option besides ``seed`` (e.g. not ``meta``, which needs a metanetwork)."""
    return tuple(name for name, factory in CRITERIA.items()
                 if all(parameter.default is not inspect.Parameter.empty or parameter.name == "seed"
                        for parameter in _parameters(factory).values()))


def get_criterion(name: str, seed: int = 0, **options: Any) -> Criterion:
    """Build the registered criterion ``name`` with its ``options`` (``seed`` goes to those that take one)."""
    check_criterion_options(name, options)
    factory = CRITERIA.get(name)
    if "seed" in _parameters(factory):
        options = {**options, "seed": seed}
    return factory(**options)
