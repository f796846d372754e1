"""Shared fixtures: small seeded models and the embedded digits data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
# Triton reads TRITON_INTERPRET when a kernel is decorated: set it before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits16():
    """Digits at 16x16 (the default task), split with seed 0."""
    from metaprune.data import load_digits_splits

    return load_digits_splits(image_size=16, seed=0)


@pytest.fixture(scope="session")
def digits8():
    """Digits at their native 8x8, for the fastest training tests."""
    from metaprune.data import load_digits_splits

    return load_digits_splits(image_size=8, seed=0)


@pytest.fixture
def zoo_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty zoo cache of the test's own and no zoo environment variables."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("METAPRUNE_CACHE", str(cache))
    monkeypatch.delenv("METAPRUNE_OFFLINE", raising=False)
    monkeypatch.delenv("METAPRUNE_INDEX", raising=False)
    return cache
