"""The rate-distortion DP: exact against brute force, masked distortion equals pruning (adaptive BN), fast."""

from __future__ import annotations

import copy
import itertools
import time

import pytest
import torch
from search_helpers import calibration, prune_copy, small_model

from metaprune.errors import SearchError
from metaprune.prune.budget import Budget
from metaprune.search import RateDistortionAllocator, SearchSpace, get_allocator, solve_rate_distortion
from metaprune.search.distortion import MaskedModel


def brute_force(distortion: torch.Tensor, reduction: torch.Tensor, required: int) -> tuple[float, int]:
    """(least total distortion, its reduction) over every level combination reaching ``required``.

    When none reaches it, the combinations with the largest total reduction compete instead.
    """
    groups, levels = distortion.shape
    combos = [(float(sum(distortion[g, c[g]] for g in range(groups))), int(sum(reduction[g, c[g]] for g in range(groups))))
              for c in itertools.product(range(levels), repeat=groups)]
    reach = min(required, max(total for _, total in combos))
    return min((cost, total) for cost, total in combos if total >= reach)


@pytest.mark.parametrize("seed", range(25))
def test_dp_equals_brute_force_on_three_layers(seed):
    generator = torch.Generator().manual_seed(seed)
    distortion = torch.rand(3, 5, generator=generator, dtype=torch.float64)
    reduction = torch.randint(0, 8, (3, 5), generator=generator)
    required = int(torch.randint(0, 25, (1,), generator=generator))  # up to 24 > 3 * 7: some are unreachable
    levels = solve_rate_distortion(distortion, reduction, required)
    chosen = torch.arange(3)
    best_cost, best_total = brute_force(distortion, reduction, required)
    assert float(distortion[chosen, levels].sum()) == pytest.approx(best_cost, abs=1e-12)
    assert int(reduction[chosen, levels].sum()) >= min(required, best_total)


def test_dp_inputs_are_checked():
    with pytest.raises(SearchError, match="groups, levels"):
        solve_rate_distortion(torch.zeros(3, 4), torch.zeros(3, 5, dtype=torch.long), 2)
    with pytest.raises(SearchError, match="non-negative"):
        solve_rate_distortion(torch.zeros(2, 2), torch.tensor([[0, -1], [0, 1]]), 1)


def with_batch_statistics(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``model``'s output with every BatchNorm on the statistics of ``inputs`` (a copy runs in train mode)."""
    copy_in_train_mode = copy.deepcopy(model).train()
    with torch.no_grad():
        return copy_in_train_mode(inputs)


def test_masked_distortion_equals_the_pruned_models_output():
    model, example_input = small_model("resnet20")
    batch = calibration()
    space = SearchSpace(model, example_input, Budget(0.5))
    masked = MaskedModel(space, batch)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        ratios = space.floor + (1 - space.floor) * torch.rand(len(space), generator=generator, dtype=torch.float64)
        pruned, _ = prune_copy(model, example_input, space.to_plan(ratios), batch)
        difference = with_batch_statistics(pruned, batch[0]) - with_batch_statistics(model, batch[0])
        expected = difference.pow(2).sum(-1).mean()
        assert float(masked.distortion(space.counts_of(ratios)[None])[0]) == pytest.approx(float(expected), rel=1e-4)


def test_dp_distorts_less_than_uniform():
    model, example_input = small_model("resnet20")
    batch = calibration()
    space = SearchSpace(model, example_input, Budget(0.3))
    masked = MaskedModel(space, batch)

    def distortion_of(name: str) -> float:
        return float(masked.distortion(space.counts_of(space.ratios_of_plan(get_allocator(name).allocate(space, batch)))[None])[0])

    assert distortion_of("dp") < distortion_of("uniform")


def test_dp_allocates_a_56_layer_resnet_in_under_ten_seconds():
    model, example_input = small_model("resnet56", width=0.25)
    layers = sum(isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) for module in model.modules())
    space = SearchSpace(model, example_input, Budget(0.25))
    start = time.process_time()  # CPU time (all threads): robust to a busy machine
    plan = RateDistortionAllocator().allocate(space, calibration())
    seconds = time.process_time() - start
    print(f"dp on resnet56 ({layers} conv/linear layers, {len(space)} groups): {seconds:.2f}s")
    assert layers >= 50 and seconds < 10.0
    assert plan.flops_ratio == pytest.approx(0.25, rel=0.02)
