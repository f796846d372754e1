"""Helpers shared by the search tests: small seeded models, calibration batches, pruned copies.

A module of its own (not ``conftest``) so that ``from search_helpers import ...`` cannot pick up
another folder's conftest.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from metaprune.flops import count_flops
from metaprune.models import create_model
from metaprune.prune.criteria import get_criterion
from metaprune.prune.groups import ModelGroups
from metaprune.prune.plan import PrunePlan
from metaprune.prune.structured import apply_plan


def small_model(name: str = "resnet20", image_size: int = 8, **kwargs):
    """A seeded untrained model for 1-channel images, in eval mode, with its example input."""
    torch.manual_seed(0)
    if name.startswith("resnet"):
        kwargs.setdefault("width", 0.5)
    model = create_model(name, num_classes=10, in_channels=1, image_size=image_size, **kwargs).eval()
    return model, torch.randn(1, 1, image_size, image_size)


def calibration(n: int = 8, image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random calibration batch."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, image_size, image_size, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def prune_copy(model: nn.Module, example_input: torch.Tensor, plan: PrunePlan,
               batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[nn.Module, ModelGroups]:
    """A physically pruned copy of ``model`` (channels chosen by ``plan.criterion``) and its groups."""
    pruned = copy.deepcopy(model)
    groups = apply_plan(pruned, example_input, plan, get_criterion(plan.criterion), batch)
    return pruned, groups


def measured_flops_ratio(model: nn.Module, example_input: torch.Tensor, plan: PrunePlan,
                         batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """FLOPs of the model pruned by ``plan``, counted by :func:`metaprune.flops.count_flops`, over the dense FLOPs."""
    pruned, _ = prune_copy(model, example_input, plan, batch)
    return count_flops(pruned, example_input) / count_flops(model, example_input)
