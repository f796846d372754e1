"""The EvoPress-style evolution (budget-neutral mutation, staged selection) and the bn_accuracy objective."""

from __future__ import annotations

import random

import pytest
import torch
from search_helpers import calibration, measured_flops_ratio, small_model

from metaprune.data import calibration_batch, make_loaders
from metaprune.errors import ConfigError
from metaprune.prune.budget import Budget
from metaprune.search import TOLERANCE, SearchSetup, get_allocator, get_method
from metaprune.search.bn_accuracy import round_sizes
from metaprune.search.evolution import EvolutionConfig, evolution_search, mutate
from metaprune.search.methods import SearchContext
from metaprune.train import fit


@pytest.fixture(scope="module")
def trained(digits8):
    """ResNet-20 (width 0.5) trained two epochs on 8x8 digits, with its example input."""
    model, example_input = small_model("resnet20")
    fit(model, make_loaders(digits8, seed=0)[0], epochs=2, lr=0.05, progress=False)
    return model.eval(), example_input


def test_mutation_moves_channels_between_groups_at_a_constant_budget(resnet_space):
    space = resnet_space
    start = space.counts_of(space.ratios_of_plan(get_allocator("uniform").allocate(space)))
    rng = random.Random(0)
    children = [mutate(space, start, rng) for _ in range(30)]
    target = space.budget.flops_ratio
    for child in children:
        assert abs(space.flops_ratio_of_counts(child) - target) <= TOLERANCE * target
        assert bool((child >= space.floor_counts).all() and (child <= space.sizes).all())
        assert bool((child % space.steps == 0).all())
    assert sum(not torch.equal(child, start) for child in children) >= 25  # moves, not rescaling back
    again = random.Random(0)
    assert all(torch.equal(child, mutate(space, start, again)) for child in children)  # seeded


class CountingObjective:
    """Three rounds; the score prefers one group wide and the rest as uniform; counts the rounds it ran."""

    name, rounds_count = "counting", 3

    def __init__(self):
        self.calls = [0, 0, 0]

    def rounds(self, keep_ratios):
        for round_index in range(3):
            self.calls[round_index] += 1
            yield float(keep_ratios[0]) - 0.1 * float(keep_ratios[1:].std()) + 0.001 * round_index


def test_staged_selection_gives_later_rounds_only_to_the_survivors(resnet_space):
    objective = CountingObjective()
    config = EvolutionConfig(generations=6, offspring=8, seed=1)
    result = evolution_search(resnet_space, objective, config=config, progress=False)
    assert config.stage_survivors(3) == [2, 1]
    # every offspring gets round 1; two per generation get round 2, one gets round 3 (plus the uniform start)
    assert objective.calls[1] <= 1 + 2 * 6 and objective.calls[2] <= 1 + 6 and objective.calls[0] > objective.calls[1]
    states = {trial.state for trial in result.trials}
    assert states == {"COMPLETE", "PRUNED"} and result.trials[0].source == "uniform"
    # the last parent is the best complete trial and improves on the uniform start
    complete = [trial.score for trial in result.trials if trial.state == "COMPLETE"]
    assert result.best_score == max(complete) > result.trials[0].score
    assert result.best_plan.keep_ratios[resnet_space.names[0]] > result.trials[0].keep_ratios[0]


def test_evolution_on_distortion_beats_its_start_and_keeps_the_budget(trained, digits8):
    model, example_input = trained
    batch = calibration_batch(digits8, n=32)
    setup = SearchSetup(model, example_input, Budget.from_speedup(4), batch)
    context = SearchContext.from_setup(setup, trials=4, seed=0, progress=False)
    result = get_method("evolution")(context)
    assert result.method == "evolution" and result.best_score >= result.trials[0].score
    assert measured_flops_ratio(model, example_input, result.best_plan, batch) == pytest.approx(0.25, rel=TOLERANCE)
    assert get_method("evolution")(context).best_plan == result.best_plan  # seeded


def test_bn_accuracy_scores_growing_validation_samples_and_leaves_the_model_alone(trained, digits8):
    model, example_input = trained
    before = {name: value.clone() for name, value in model.state_dict().items()}
    setup = SearchSetup(model, example_input, Budget(0.5), calibration_batch(digits8, n=16), objective="bn_accuracy",
                        splits=digits8)
    space, objective = setup.build()
    assert objective.sizes == round_sizes(len(digits8.val), 3) and objective.sizes[-1] == len(digits8.val)
    assert round_sizes(2000, 3) == [500, 1000, 2000]
    keep_ratios = space.project(torch.full((len(space),), 0.5))
    scores = list(objective.rounds(keep_ratios))
    assert len(scores) == objective.rounds_count == 3 and all(0.0 <= score <= 1.0 for score in scores)
    assert scores[-1] > 0.3  # chance is 0.1: BatchNorm was re-estimated
    assert list(objective.rounds(keep_ratios)) == scores  # fixed batches and images
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_bad_options_are_config_errors(resnet_space):
    model, example_input = small_model("mlp")
    with pytest.raises(ConfigError, match="bn_accuracy objective needs the data splits"):
        SearchSetup(model, example_input, Budget(0.5), calibration(), objective="bn_accuracy")
    with pytest.raises(ConfigError, match="generations"):
        EvolutionConfig(generations=0)
    with pytest.raises(ConfigError, match="move_fraction"):
        EvolutionConfig(move_fraction=0.0)
    with pytest.raises(ConfigError, match="survivors"):
        evolution_search(resnet_space, CountingObjective(), config=EvolutionConfig(survivors=(2,)), progress=False)
