"""Allocators: one protocol, many ways to choose per-group keep ratios under a FLOPs budget.

An allocator *proposes* a keep-ratio vector; :meth:`Allocator.allocate` projects it onto
the budget with :meth:`~metaprune.search.space.SearchSpace.project`, so whatever an
allocator prefers, the plan it returns is feasible.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from metaprune.prune.criteria import get_criterion
from metaprune.prune.plan import PrunePlan
from metaprune.prune.structured import allocate_global, score_groups
from metaprune.registry import Registry
from metaprune.search.space import SearchSpace

Calibration = tuple[torch.Tensor, torch.Tensor]


class Allocator(ABC):
    """Chooses keep ratios for the groups of a :class:`SearchSpace`; subclasses set :attr:`name`."""

    name: ClassVar[str]

    @abstractmethod
    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        """A keep-ratio vector (one entry per group, in ``space.names`` order); need not meet the budget."""

    def allocate(self, space: SearchSpace, calibration: Calibration | None = None) -> PrunePlan:
        """The proposal projected onto the budget, as a plan."""
        return space.to_plan(space.project(self.propose(space, calibration)))


#: Every allocator class by name (``@ALLOCATORS.register(name)`` on an :class:`Allocator` subclass).
ALLOCATORS: Registry[type[Allocator]] = Registry("allocator")


@ALLOCATORS.register("uniform")
class UniformAllocator(Allocator):
    """The same keep ratio for every group (the projection finds the ratio)."""

    name = "uniform"

    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        return torch.full((len(space),), 0.5, dtype=torch.float64)


def _root_shape(space: SearchSpace, index: int) -> tuple[float, float, float]:
    """(fan-in, fan-out, kernel area) of a group's root layer; a head group counts heads as its outputs."""
    group = space.groups.groups[index]
    root = space.model.get_submodule(group.name)
    if group.kind == "head":
        return float(root.qkv.weight.shape[1]), float(group.size), 1.0
    weight = root.weight
    kernel = float(math.prod(weight.shape[2:])) if weight.dim() > 2 else 1.0
    return float(weight.shape[1]), float(weight.shape[0]), kernel


@ALLOCATORS.register("erk")
class ERKAllocator(Allocator):
    r"""Erdős–Rényi-kernel scaling (Evci et al., 2020) adapted to channel groups.

    ERK gives a layer the weight density :math:`\propto (n_{in} + n_{out} + k_h + k_w) / (n_{in}\,n_{out}\,k_h k_w)`:
    large, thin-kerneled layers are pruned harder. Here a group is pruned through its root
    layer (the layer whose output channels it owns), so the score of group :math:`g` is that
    of its root layer, with :math:`k_h + k_w \approx 2\sqrt{k}` for kernel area :math:`k`.
    Scores are scaled so the densest group keeps everything; the projection then scales all
    pruned fractions by one factor, which keeps ERK's relative ordering.
    """

    name = "erk"

    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        scores = []
        for index in range(len(space)):
            fan_in, fan_out, kernel = _root_shape(space, index)
            scores.append((fan_in + fan_out + 2 * math.sqrt(kernel)) / (fan_in * fan_out * kernel))
        density = torch.tensor(scores, dtype=torch.float64)
        return density / density.max()


class GlobalRankingAllocator(Allocator):
    """The engine's global ranking of normalised channel scores (with the per-group floor)."""

    criterion_name: ClassVar[str]

    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        criterion = get_criterion(self.criterion_name)
        scores = score_groups(space.groups, criterion, calibration)
        target = space.budget.target_flops(space.dense_flops)
        counts = allocate_global(space.groups, scores, criterion, space.cost, target, space.floor_counts)
        return counts / space.sizes


@ALLOCATORS.register("global_magnitude")
class GlobalMagnitudeAllocator(GlobalRankingAllocator):
    """Global ranking of group-L2 channel norms, each group's scores normalised to mean one."""

    name = "global_magnitude"
    criterion_name = "group_l2"


@ALLOCATORS.register("lamp")
class LAMPAllocator(GlobalRankingAllocator):
    """Global ranking of LAMP scores (Lee et al., ICLR'21), comparable across groups by construction."""

    name = "lamp"
    criterion_name = "lamp"


def get_allocator(name: str) -> Allocator:
    """An allocator by name (see :data:`ALLOCATORS`: uniform, erk, global_magnitude, lamp, halp, dp)."""
    return ALLOCATORS.get(name)()


@ALLOCATORS.register("halp")
class HALPAllocator(Allocator):
    """Latency-aware knapsack allocation (HALP, Shen et al., NeurIPS'22) of group-L2 channel importance.

    The greedy knapsack (:mod:`metaprune.prune.knapsack`) removes the least importance per millisecond
    saved. In a latency space (``metaprune search --latency-speedup``) the space's own cost prices every
    channel and the knapsack goes straight to the latency budget. In a FLOPs space the latency table of the
    model on this machine (batch 1, one thread; measured once, then cached:
    :func:`metaprune.latency.load_or_profile`) prices them, the knapsack goes down to the predicted latency
    of the uniform plan at the budget, and the projection then meets the FLOPs budget, so at equal FLOPs
    the plan spends them where they cost the least time.
    """

    name = "halp"
    #: how the FLOPs-space table is measured (``None``: :class:`~metaprune.latency.ProfileSettings`'s defaults,
    #: batch 1, one thread); e.g. ``ProfileSettings(batch=64)`` to price channels at a throughput batch
    profile_settings: object | None = None

    def propose(self, space: SearchSpace, calibration: Calibration | None = None) -> torch.Tensor:
        from metaprune.prune.knapsack import allocate_knapsack

        criterion = get_criterion("group_l2")
        scores = score_groups(space.groups, criterion, calibration)
        chunked = []
        for name, step in zip(space.names, space.group_steps.tolist()):
            normalised = criterion.normalize(scores[name].to(torch.float64))
            chunked.append(normalised.reshape(int(step), -1).mean(0) if step > 1 else normalised)
        if space.cost_kind == "latency":
            latency = space.cost
            target = space.budget.target_flops(space.dense_flops)
        else:
            from metaprune.latency import LatencyCostModel, load_or_profile

            table, _, _ = load_or_profile(space.model, space.example_input, self.profile_settings)
            latency = LatencyCostModel(space.groups, table)
            uniform = space.project(torch.full((len(space),), 0.5, dtype=torch.float64))
            target = latency.latency_ms(space.counts_of(uniform))
        # in the groups' own steps; the projection then snaps the counts to ``round_to``
        counts = allocate_knapsack(chunked, latency, target, space.floor_counts, space.group_steps)
        return counts / space.sizes
