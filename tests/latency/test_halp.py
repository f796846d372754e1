"""Knapsack allocation (HALP): importance per unit of cost, as a ranking of the engine and as the
``halp`` allocator of the search (held to the allocator contract), on a mocked clock."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import metaprune.latency.profile as profile_module
from metaprune.prune.budget import Budget
from metaprune.prune.groups import CONV_LINEAR, layer_widths
from metaprune.prune.knapsack import allocate_knapsack
from metaprune.search import TOLERANCE, SearchSpace, get_allocator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
from search_helpers import calibration, measured_flops_ratio, prune_copy, small_model  # noqa: E402


class Weighted:
    """Cost ``sum_g price_g * count_g`` with the engine cost interface."""

    def __init__(self, sizes: list[float], prices: list[float]):
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        self.prices = torch.tensor(prices, dtype=torch.float64)

    def flops(self, counts: torch.Tensor) -> float:
        return float((self.prices * counts).sum())


def test_knapsack_removes_the_least_importance_per_unit_of_cost() -> None:
    # group 0 is slightly less important but nearly free; group 1 is costly: the knapsack prunes group 1,
    # where a ranking by importance alone would empty group 0 first
    cost = Weighted([4, 4], [0.01, 1.0])
    scores = [torch.tensor([0.9, 0.9, 0.9, 0.9]), torch.tensor([1.0, 1.1, 1.2, 1.3])]
    counts = allocate_knapsack(scores, cost, target=2.1, floor=torch.ones(2), steps=torch.ones(2))
    assert counts.tolist() == [4.0, 2.0]
    assert cost.flops(counts) <= 2.1


def test_knapsack_respects_floors_and_steps() -> None:
    cost = Weighted([8, 6], [1.0, 1.0])
    scores = [torch.arange(4.0), torch.arange(6.0)]  # group 0 moves in chunks of 2 channels
    counts = allocate_knapsack(scores, cost, target=0.0, floor=torch.tensor([2.0, 3.0]), steps=torch.tensor([2.0, 1.0]))
    assert counts.tolist() == [2.0, 3.0]  # cannot go below the floors, even for an unreachable target


@pytest.fixture
def mocked_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(profile_module, "_time_layer", lambda layer, shape, cin, cout, settings: cin * cout / 1000.0)
    monkeypatch.setattr(profile_module, "measure_ms", lambda model, *a, **o: 0.5 + sum(
        math.prod(layer_widths(module)) / 1000.0 for module in model.modules() if isinstance(module, CONV_LINEAR)))


@pytest.mark.parametrize("name, image_size, budget", [("resnet20", 8, 0.5), ("vgg11", 8, 0.25)])
def test_halp_allocator_contract(mocked_clock, name: str, image_size: int, budget: float) -> None:
    model, example_input = small_model(name, image_size=image_size)
    batch = calibration(image_size=image_size)
    space = SearchSpace(model, example_input, Budget(budget))
    plan = get_allocator("halp").allocate(space, batch)
    assert measured_flops_ratio(model, example_input, plan, batch) == pytest.approx(budget, rel=TOLERANCE)
    _, groups = prune_copy(model, example_input, plan, batch)
    for group in groups.groups:
        dense_size = int(space.sizes[space.names.index(group.name)])
        assert groups.current_size(group) >= math.ceil(space.min_keep * dense_size), group.name
    assert get_allocator("halp").allocate(space, batch) == plan
    assert plan != get_allocator("global_magnitude").allocate(space, batch)


def test_prune_with_knapsack_ranking_meets_a_flops_budget() -> None:
    from metaprune.flops import count_flops
    from metaprune.prune.criteria import get_criterion
    from metaprune.prune.structured import prune_to_flops

    model, example_input = small_model("resnet20")
    dense = count_flops(model, example_input)
    prune_to_flops(model, example_input, 0.4 * dense, get_criterion("group_l2"), ranking="knapsack")
    assert count_flops(model, example_input) == pytest.approx(0.4 * dense, rel=0.02)
