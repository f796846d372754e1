"""One contract for every allocator: on budget (measured on the pruned model), floors kept, deterministic."""

from __future__ import annotations

import math

import pytest
from search_helpers import calibration, measured_flops_ratio, prune_copy, small_model

from metaprune.errors import ConfigError, SearchError
from metaprune.prune.budget import Budget
from metaprune.search import TOLERANCE, SearchSpace, get_allocator

ALLOCATORS = ["uniform", "erk", "global_magnitude", "lamp", "dp"]
# (model, input side, FLOPs budget, min_keep): residual coupling, plain convs, linear layers,
# attention heads, and a budget so close to the floors that most groups sit on theirs.
CASES = {
    "resnet20-half": ("resnet20", 8, 0.5, 0.1),
    "vgg11-quarter": ("vgg11", 8, 0.25, 0.1),
    "mlp-quarter": ("mlp", 8, 0.25, 0.1),
    "vit-third": ("vit_tiny", 16, 0.3, 0.1),
    "resnet20-near-floor": ("resnet20", 8, 0.2, 0.3),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """(model, example input, search space, calibration batch) of one CASES entry."""
    name, image_size, budget, min_keep = CASES[request.param]
    model, example_input = small_model(name, image_size=image_size)
    space = SearchSpace(model, example_input, Budget(budget), min_keep=min_keep)
    return model, example_input, space, calibration(image_size=image_size)


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_allocator_contract(case, allocator):
    model, example_input, space, batch = case
    plan = get_allocator(allocator).allocate(space, batch)

    # On budget, measured by the project's FLOPs counter on the physically pruned model.
    target = space.budget.flops_ratio
    assert measured_flops_ratio(model, example_input, plan, batch) == pytest.approx(target, rel=TOLERANCE)
    assert plan.flops_ratio == pytest.approx(target, rel=TOLERANCE)

    # Every group of the pruned model keeps at least ceil(min_keep * size) channels.
    _, groups = prune_copy(model, example_input, plan, batch)
    for group in groups.groups:
        dense_size = int(space.sizes[space.names.index(group.name)])
        assert groups.current_size(group) >= math.ceil(space.min_keep * dense_size), group.name

    # Deterministic: a fresh allocator on the same space returns the same plan.
    assert get_allocator(allocator).allocate(space, batch) == plan


def test_allocators_prefer_different_plans(case):
    *_, space, batch = case
    plans = {name: tuple(get_allocator(name).allocate(space, batch).keep_ratios.values()) for name in ALLOCATORS}
    assert len(set(plans.values())) >= 4, "allocators should not collapse onto one plan"


def test_unknown_allocator_lists_the_known_ones():
    with pytest.raises(ConfigError, match="uniform, erk, global_magnitude, lamp, halp, dp"):
        get_allocator("amc")


def test_dp_without_calibration_is_a_search_error(resnet_space):
    with pytest.raises(SearchError, match="calibration"):
        get_allocator("dp").allocate(resnet_space)


def test_halp_prices_channels_with_its_profile_settings(resnet_space, monkeypatch):
    # A FLOPs-space HALP reads this machine's latency table: measured as the allocator's settings say
    # (benchmarks/cifar10_search.py asks for a batch-64 table), the defaults (batch 1) otherwise.
    import metaprune.latency as latency
    from metaprune.latency import ProfileSettings
    from metaprune.search.allocators import HALPAllocator

    asked = []

    class Measured(Exception):
        pass

    def load_or_profile(model, example_input, settings=None, **options):
        asked.append(settings)
        raise Measured

    monkeypatch.setattr(latency, "load_or_profile", load_or_profile)
    space, batch = resnet_space, calibration()
    allocator = HALPAllocator()
    allocator.profile_settings = ProfileSettings(batch=64, threads=1, statistic="cpu")
    for chosen in (allocator, get_allocator("halp")):
        with pytest.raises(Measured):
            chosen.allocate(space, batch)
    assert asked[0] == ProfileSettings(batch=64, threads=1, statistic="cpu")
    assert asked[1] is None
