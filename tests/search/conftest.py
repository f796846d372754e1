"""Fixtures for the search tests: small seeded models, their search spaces and calibration batches."""

from __future__ import annotations

import pytest
import torch
from search_helpers import small_model

from metaprune.prune.budget import Budget
from metaprune.search.space import SearchSpace


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Search tests run many tiny forward passes: with a second thread they wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet_space() -> SearchSpace:
    """ResNet-20 at width 0.5 on 8x8 inputs, budget a quarter of the FLOPs."""
    model, example_input = small_model("resnet20")
    return SearchSpace(model, example_input, Budget.from_speedup(4.0))
