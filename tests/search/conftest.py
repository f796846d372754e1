"""Fixtures for the search tests: small seeded models, their search spaces and calibration batches."""

from __future__ import annotations

import pytest
import torch

from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.search.space import SearchSpace


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


@pytest.fixture(scope="module")
def resnet_space() -> SearchSpace:
    """ResNet-20 at width 0.5 on 8x8 inputs, budget a quarter of the FLOPs."""
    model, example_input = small_model("resnet20")
    return SearchSpace(model, example_input, Budget.from_speedup(4.0))
