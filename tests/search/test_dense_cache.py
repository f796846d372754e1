"""The dense model a search caches in its run directory is reused only for the recipe that made it."""

from __future__ import annotations

import json

import pytest
import torch

from metaprune.errors import WeightsError
from metaprune.prune.budget import Budget
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.train import save_state
from metaprune.train.checkpoint import read_tensors
from metaprune.workflows import search as search_workflow
from metaprune.workflows.search import SearchOptions, dense_model

TASK = TaskSpec(model="resnet20", model_kwargs={"width": 0.5}, image_size=8)


def options(task: TaskSpec = TASK, epochs: int = 0, **training) -> SearchOptions:
    """A search on the tiny task; zero epochs keep the seeded initialisation (enough to tell models apart)."""
    return SearchOptions(budget=Budget(0.5), task=task, training=TrainingSpec.dense(epochs, **training), progress=False)


@pytest.fixture(scope="module")
def splits():
    return TASK.load_splits()


@pytest.fixture
def cached(tmp_path, splits):
    """A run directory holding the dense model trained (0 epochs) by ``options()``, and that model."""
    model = dense_model(options(), splits, tmp_path)
    return tmp_path / "dense.safetensors", model


def _never_train(*args, **kwargs):
    raise AssertionError("the cached dense model should have been reused")


def test_the_cache_records_its_recipe(cached):
    path, _ = cached
    _, metadata = read_tensors(path)
    assert metadata["recipe"] == {"model": "resnet20", "model_kwargs": {"width": 0.5}, "data": "digits", "image_size": 8,
                                  "seed": 0, "epochs": 0, "optimizer": "sgd", "lr": 0.05, "batch_size": 64}
    assert not [entry.name for entry in path.parent.iterdir() if entry.name != path.name]  # no temporary left


def test_the_same_recipe_reuses_the_cache(cached, splits, monkeypatch):
    path, model = cached
    monkeypatch.setattr(search_workflow, "train_dense", _never_train)
    again = dense_model(options(), splits, path.parent)
    for (name, tensor), (_, reused) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(tensor, reused), name


@pytest.mark.parametrize(("changed", "expected"), [
    (options(epochs=1), "epochs 0 now 1"),
    (options(TaskSpec(model="resnet20", model_kwargs={"width": 0.5}, image_size=8, seed=1)), "seed 0 now 1"),
    (options(TaskSpec(model="resnet20", model_kwargs={"width": 0.25}, image_size=8)), "model_kwargs"),
    (options(TaskSpec(model="mlp", image_size=8)), "model 'resnet20' now 'mlp'"),
    (options(lr=0.1), "lr 0.05 now 0.1"),
    (options(batch_size=32), "batch_size 64 now 32"),
])
def test_another_recipe_is_refused_and_the_cache_kept(cached, splits, monkeypatch, changed, expected):
    path, _ = cached
    before = path.read_bytes()
    monkeypatch.setattr(search_workflow, "train_dense", _never_train)
    with pytest.raises(WeightsError, match=expected) as error:
        dense_model(changed, splits, path.parent)
    assert str(path) in str(error.value) and "delete it to retrain" in str(error.value)
    assert "\n" not in str(error.value) and path.read_bytes() == before


def test_explicit_weights_are_used_whatever_their_recipe(cached, splits, monkeypatch):
    path, _ = cached
    monkeypatch.setattr(search_workflow, "train_dense", _never_train)
    dense_model(SearchOptions(budget=Budget(0.5), task=TASK, training=TrainingSpec.dense(3), weights=str(path)),
                splits, None)


def test_a_cache_from_an_earlier_version_without_a_recipe_is_refused(cached, splits):
    path, model = cached
    save_state(path, model, {"model": "resnet20", "seed": 0})  # what earlier versions recorded
    with pytest.raises(WeightsError, match="records no recipe"):
        dense_model(options(), splits, path.parent)


def test_a_corrupt_cache_is_one_line_that_says_what_to_do(cached, splits):
    path, _ = cached
    path.write_bytes(path.read_bytes()[:100])  # torn by a kill under an earlier, non-atomic version
    with pytest.raises(WeightsError, match="delete it to retrain") as error:
        dense_model(options(), splits, path.parent)
    assert "\n" not in str(error.value)


def test_a_fresh_run_directory_trains_and_caches(tmp_path, splits):
    model = dense_model(options(), splits, tmp_path / "new" / "run")
    tensors, metadata = read_tensors(tmp_path / "new" / "run" / "dense.safetensors")
    assert json.dumps(metadata["recipe"]) and set(tensors) == set(model.state_dict())
