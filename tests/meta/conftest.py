"""Fixtures: small seeded networks and images for metanetwork tests; a tiny trained population."""

from __future__ import annotations

import pytest
import torch
from meta_helpers import CONFIG
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


@pytest.fixture(scope="session")
def splits():
    """The digits at 8 x 8, split with seed 0 (what ``--image-size 8 --seed 0`` gives)."""
    from metaprune.data import load_digits_splits

    return load_digits_splits(image_size=8, seed=0)


@pytest.fixture(scope="session")
def population(tmp_path_factory, splits):
    """Four one-epoch networks (two MLPs, two ResNet-20s at width 0.25), half of them held out: (root, networks)."""
    from metaprune.meta.population import build_population

    root = tmp_path_factory.mktemp("meta-population")
    networks = build_population(root, splits, architectures=["mlp", "resnet20"], widths=[0.25], seeds_per_spec=2,
                                epochs=1, val_fraction=0.5, progress=False)
    return root, networks


@pytest.fixture(scope="session")
def trained(population, splits, tmp_path_factory):
    """One uninterrupted meta-training run (``CONFIG``) on the tiny population: (its directory, its history)."""
    from metaprune.meta.training import MetaTrainer

    root, networks = population
    out = tmp_path_factory.mktemp("meta-run")
    return out, MetaTrainer(CONFIG, root, networks, splits, out).fit(progress=False)
