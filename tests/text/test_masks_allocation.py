"""Masks beyond one uniform sparsity: OWL allocation across blocks, dense targets and column order for SparseGPT."""

from __future__ import annotations

import copy

import pytest
import torch

from metaprune.errors import ConfigError, PruneError
from metaprune.prune.allocation import SPARSITY_ALLOCATIONS, AllocationOptions, outlier_ratio
from metaprune.prune.layerwise import (
    InputStats,
    LayerwiseOptions,
    SparsityTarget,
    prune_blocks,
    reached_sparsity,
    relative_error,
)
from metaprune.prune.sparsegpt import sparsegpt
from tests.text.test_layerwise import Stack, correlated_inputs, stats_of


def spiky(outliers: int, size: int = 10) -> torch.Tensor:
    """``size`` scores of 1, ``outliers`` of them 1000."""
    return torch.tensor([1000.0] * outliers + [1.0] * (size - outliers))


def test_outlier_ratio_counts_scores_above_threshold_times_the_mean() -> None:
    assert outlier_ratio([spiky(1)], threshold=3.0) == pytest.approx(0.1)  # mean 100.9, 1000 > 302.7
    assert outlier_ratio([spiky(2)], threshold=5.0) == 0.0  # mean 200.8, 1000 < 1004
    assert outlier_ratio([spiky(1), torch.ones(10)], threshold=3.0) == pytest.approx(0.05)  # a block pools its layers


def test_owl_gives_outlier_heavy_blocks_lower_sparsity_at_the_same_overall_sparsity() -> None:
    owl = SPARSITY_ALLOCATIONS.get("owl")
    blocks = [[spiky(0)], [spiky(1)], [spiky(2)]]  # outlier ratios 0, 0.1, 0.2 at threshold 3
    sparsities = owl(blocks, 0.5, AllocationOptions(strength=0.1, threshold=3.0))
    assert sparsities == pytest.approx([0.6, 0.5, 0.4])
    # unequal block sizes: the parameter-weighted mean stays the target
    sizes = [10, 30, 60]
    blocks = [[spiky(0, 10)], [spiky(3, 30)], [spiky(12, 60)]]  # ratios 0, 0.1, 0.2 again
    sparsities = owl(blocks, 0.7, AllocationOptions(strength=0.05, threshold=3.0))
    assert sum(s * n for s, n in zip(sparsities, sizes)) / sum(sizes) == pytest.approx(0.7)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.1)
    assert SPARSITY_ALLOCATIONS.get("uniform")(blocks, 0.7, AllocationOptions()) == [0.7] * 3
    assert owl([[torch.ones(4)], [torch.ones(4)]], 0.7, AllocationOptions()) == [0.7, 0.7]  # no spread


@pytest.mark.parametrize(("strength", "threshold", "message"), [(-0.1, 5.0, "strength"), (1.0, 5.0, "strength"),
                                                                (0.1, 0.0, "threshold")])
def test_allocation_options_are_checked(strength, threshold, message) -> None:
    with pytest.raises(ConfigError, match=message):
        AllocationOptions(strength=strength, threshold=threshold)


def test_owl_refuses_a_strength_that_leaves_0_1() -> None:
    with pytest.raises(ConfigError, match="smaller strength"):
        SPARSITY_ALLOCATIONS.get("owl")([[spiky(0)], [spiky(1)]], 0.9, AllocationOptions(strength=0.2, threshold=3.0))


def calibration() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 20, (8, 6), generator=generator),
             "attention_mask": torch.ones(8, 6, dtype=torch.long)} for _ in range(4)]


def test_prune_blocks_with_owl_meets_the_overall_sparsity_with_different_blocks() -> None:
    torch.manual_seed(0)
    model = Stack(width=16, depth=3)
    with torch.no_grad():
        model.blocks[1].up.weight[:, 0] *= 40.0  # an outlier input feature in block 1
    options = LayerwiseOptions(allocation="owl", allocation_options=AllocationOptions(strength=0.1, threshold=3.0))
    reports = prune_blocks(model, model.blocks, calibration(), "wanda", SparsityTarget(sparsity=0.6), options=options)
    assert reached_sparsity(reports) == pytest.approx(0.6, abs=0.02)  # rows of 16 and 32 round down
    by_block = {r.name.split(".")[0]: r.sparsity for r in reports if r.name.endswith("up")}
    # the outlier feature (and its effect on what follows) makes blocks 1 and 2 keep more than block 0
    assert by_block["0"] > 0.6 + 0.05 and max(by_block["1"], by_block["2"]) < 0.6
    with pytest.raises(ConfigError, match="unknown sparsity allocation"):
        prune_blocks(model, model.blocks, calibration(), "wanda", SparsityTarget(sparsity=0.6),
                     options=LayerwiseOptions(allocation="owls"))
    with pytest.raises(ConfigError, match="does not take the options"):
        prune_blocks(model, model.blocks, calibration(), "wanda", SparsityTarget(sparsity=0.6),
                     options=LayerwiseOptions(method_options={"dampening": 0.1}))


def test_an_n_m_target_stays_uniform_under_owl() -> None:
    torch.manual_seed(0)
    model = Stack(width=16, depth=2)
    reports = prune_blocks(model, model.blocks, calibration(), "wanda", SparsityTarget(n_m=(2, 4)),
                           options=LayerwiseOptions(allocation="owl"))
    assert all(r.sparsity == pytest.approx(0.5) for r in reports)


def test_dense_targets_track_the_dense_model_better_through_the_stack() -> None:
    torch.manual_seed(0)
    dense = Stack(width=16, depth=4)
    batches = calibration()
    with torch.no_grad():
        reference = torch.cat([dense(**batch) for batch in batches])
    errors = {}
    for dense_targets in (False, True):
        model = copy.deepcopy(dense)
        prune_blocks(model, model.blocks, batches, "sparsegpt", SparsityTarget(sparsity=0.75),
                     options=LayerwiseOptions(dense_targets=dense_targets))
        with torch.no_grad():
            errors[dense_targets] = float((torch.cat([model(**batch) for batch in batches]) - reference).norm())
    assert errors[True] < errors[False]


def test_dense_targets_equal_to_the_inputs_change_nothing() -> None:
    inputs = correlated_inputs()
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    with_cross = InputStats(16)
    with_cross.add(inputs, inputs)
    target = SparsityTarget(sparsity=0.5)
    assert torch.allclose(sparsegpt(weight, with_cross, target), sparsegpt(weight, stats_of(inputs), target), atol=1e-5)


def test_hessian_column_order_meets_the_target_and_is_not_worse_here() -> None:
    torch.manual_seed(0)
    weight, inputs = torch.randn(32, 16), correlated_inputs()
    stats = stats_of(inputs)
    target = SparsityTarget(sparsity=0.7)
    ordered = sparsegpt(weight, stats, target, block_size=4, column_order="hessian")
    assert float((ordered == 0).float().mean()) == pytest.approx(0.7, abs=0.01)
    natural = sparsegpt(weight, stats, target, block_size=4)
    assert relative_error(weight, ordered, stats) <= relative_error(weight, natural, stats) * 1.05
    with pytest.raises(PruneError, match="natural column order"):
        sparsegpt(weight, stats, SparsityTarget(n_m=(2, 4)), column_order="hessian")
    with pytest.raises(PruneError, match="unknown column order"):
        sparsegpt(weight, stats, target, column_order="random")


def test_bias_correction_keeps_the_mean_output_of_the_first_pruned_layer() -> None:
    torch.manual_seed(0)
    dense = Stack(width=16, depth=1)
    model = copy.deepcopy(dense)
    batches = calibration()
    prune_blocks(model, model.blocks, batches, "wanda", SparsityTarget(sparsity=0.7),
                 options=LayerwiseOptions(bias_correction=True))
    with torch.no_grad():
        inputs = torch.cat([dense.embed(batch["input_ids"]).reshape(-1, 16) for batch in batches])
        kept_mean = model.blocks[0].up(inputs).mean(0)
        assert torch.allclose(kept_mean, dense.blocks[0].up(inputs).mean(0), atol=1e-5)
        assert not torch.equal(model.blocks[0].up.bias, dense.blocks[0].up.bias)


def test_recommended_options_and_the_text_budget_check_of_an_uneven_allocation() -> None:
    from types import SimpleNamespace

    from metaprune.prune.layerwise import recommended_options
    from metaprune.workflows.text import check_text_budget

    assert recommended_options("sparsegpt").dense_targets and recommended_options("wanda") == LayerwiseOptions()
    rows = [{"name": "a", "sparsity": 0.6}, {"name": "b", "sparsity": 0.8}]
    check_text_budget(SimpleNamespace(extra={"per_layer": rows, "reached_sparsity": 0.7}), SparsityTarget(sparsity=0.7))
    with pytest.raises(PruneError, match="68.00% sparse for a 70% target"):
        check_text_budget(SimpleNamespace(extra={"per_layer": rows, "reached_sparsity": 0.68}),
                          SparsityTarget(sparsity=0.7))
    with pytest.raises(PruneError, match="miss the 2:4 sparsity"):
        check_text_budget(SimpleNamespace(extra={"per_layer": rows, "reached_sparsity": 0.7}),
                          SparsityTarget(n_m=(2, 4)))
