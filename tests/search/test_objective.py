"""The two objectives: minus the calibration distortion (zero when dense), accuracy after a short fine-tune."""

from __future__ import annotations

import pytest
import torch
from search_helpers import calibration, small_model

from metaprune.data import calibration_batch, make_loaders
from metaprune.errors import ConfigError
from metaprune.prune.budget import Budget
from metaprune.search import SearchSetup
from metaprune.train import fit


@pytest.fixture(scope="module")
def trained(digits8):
    """ResNet-20 (width 0.5) trained two epochs on 8x8 digits, with its example input."""
    model, example_input = small_model("resnet20")
    fit(model, make_loaders(digits8, seed=0)[0], epochs=2, lr=0.05, progress=False)
    return model.eval(), example_input


def test_distortion_is_zero_when_dense_and_grows_with_pruning(trained, digits8):
    model, example_input = trained
    space, objective = SearchSetup(model, example_input, Budget(0.5), calibration_batch(digits8, n=32)).build()
    scores = [next(objective.rounds(torch.full((len(space),), keep))) for keep in (1.0, 0.75, 0.5, 0.25)]
    assert scores[0] == 0.0 and objective.rounds_count == 1
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0


def test_finetune_scores_accuracy_after_each_round_and_leaves_the_dense_model_alone(trained, digits8):
    model, example_input = trained
    before = {name: value.clone() for name, value in model.state_dict().items()}
    setup = SearchSetup(model, example_input, Budget(0.5), calibration_batch(digits8, n=16), objective="finetune",
                        splits=digits8, finetune_fraction=0.5)
    space, objective = setup.build()
    keep_ratios = space.project(torch.full((len(space),), 0.5))
    scores = list(objective.rounds(keep_ratios))
    assert len(scores) == objective.rounds_count == 2
    assert all(0.0 <= score <= 1.0 for score in scores) and scores[-1] > 0.5  # chance is 0.1
    assert list(objective.rounds(keep_ratios)) == scores  # seeded
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_setup_options_are_checked():
    model, example_input = small_model("mlp")
    with pytest.raises(ConfigError, match="unknown objective 'loss'"):
        SearchSetup(model, example_input, Budget(0.5), calibration(), objective="loss")
    with pytest.raises(ConfigError, match="needs the data splits"):
        SearchSetup(model, example_input, Budget(0.5), calibration(), objective="finetune")


def test_the_finetune_objective_re_estimates_batchnorm_so_a_pruned_trial_is_not_at_chance(digits16):
    """Pruned without new BatchNorm statistics a ResNet scores at chance and a short fine-tune cannot repair it."""
    from metaprune.data import calibration_batch
    from metaprune.prune.budget import Budget
    from metaprune.search.objective import SearchSetup
    from metaprune.specs import TaskSpec, TrainingSpec
    from metaprune.workflows.prune import train_dense

    dense = train_dense(TaskSpec(), TrainingSpec.dense(2), digits16, progress=False)
    example = digits16.test[0][0].unsqueeze(0)
    setup = SearchSetup(dense, example, Budget(0.5), calibration_batch(digits16, n=64, seed=0), "finetune", digits16, 0.1)
    space, objective = setup.build()
    ratios = space.project(torch.full((len(space),), 0.5, dtype=torch.float64))
    scores = list(objective.rounds(ratios))
    assert scores[-1] > 0.5  # chance is 0.1
    assert list(objective.rounds(ratios)) == scores  # the same plan scores the same
