"""The shared option specs: frozen, validated, defaults by stage and optimiser."""

import dataclasses

import pytest

from metaprune.errors import ConfigError
from metaprune.prune.spec import PruningSpec
from metaprune.specs import DEFAULT_LR, TaskSpec, TrainingSpec


def test_learning_rate_defaults_follow_stage_and_optimizer():
    assert TrainingSpec.dense().lr_for("resnet20") == DEFAULT_LR["dense"]["sgd"] == 0.05
    assert TrainingSpec.dense().lr_for("vit_tiny") == 2e-3
    assert TrainingSpec.finetune().lr_for("resnet20") == 0.01
    assert TrainingSpec.finetune().lr_for("vit_tiny") == 5e-4
    assert TrainingSpec.finetune(lr=0.3).lr_for("vit_tiny") == 0.3
    assert TrainingSpec.dense(optimizer="adamw").optimizer_for("resnet20") == "adamw"


def test_specs_are_frozen_and_keep_a_private_copy_of_their_mappings():
    kwargs = {"width": 0.5}
    task = TaskSpec(model="resnet20", model_kwargs=kwargs)
    kwargs["width"] = 2.0
    assert task.model_kwargs == {"width": 0.5}
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PruningSpec().pattern = "n:m"  # type: ignore[misc]


@pytest.mark.parametrize(("build", "message"), [
    (lambda: TrainingSpec.dense(-1), "--epochs must be an integer >= 0"),
    (lambda: TrainingSpec.finetune(-2), "--finetune-epochs must be an integer >= 0"),
    (lambda: TrainingSpec.dense(optimizer="adam"), "unknown optimizer 'adam'"),
    (lambda: TrainingSpec.dense(lr=0.0), "learning rate must be a finite number > 0"),
    (lambda: TrainingSpec.dense(lr=float("nan")), "learning rate must be a finite number > 0"),
    (lambda: TrainingSpec.finetune(lr=float("inf")), "learning rate must be a finite number > 0"),
    (lambda: TrainingSpec.dense(10**9), "at most 10000"),
    (lambda: TrainingSpec.dense(batch_size=0), "batch size must be a positive integer"),
    (lambda: TaskSpec(image_size=0), r"image size must be an integer in \[1, 4096\]"),
    (lambda: TaskSpec(model_kwargs={"width": float("nan")}), "model option width must be a finite number"),
    (lambda: PruningSpec(pattern="block"), "unknown pattern 'block'"),
    (lambda: PruningSpec(ranking="layer"), "unknown ranking 'layer'"),
    (lambda: PruningSpec(steps=0), r"--steps must be an integer in \[1, 100\]"),
    (lambda: PruningSpec(steps=1000), r"--steps must be an integer in \[1, 100\]"),
    (lambda: PruningSpec(min_keep=float("nan")), r"--min-keep must be in \(0, 1\]"),
    (lambda: PruningSpec(n_m=(2, 0)), "--n-m needs whole numbers 0 < n < m"),
])
def test_bad_values_are_one_config_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
