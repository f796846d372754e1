"""Fixtures: small seeded networks and images for metanetwork tests."""

from __future__ import annotations

import pytest
import torch
from random_batchnorm import randomised
from small_networks import SmallMLP, SmallResNet


@pytest.fixture
def resnet() -> SmallResNet:
    torch.manual_seed(0)
    return randomised(SmallResNet(), seed=1)


@pytest.fixture
def mlp() -> SmallMLP:
    torch.manual_seed(0)
    return randomised(SmallMLP(), seed=1)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
