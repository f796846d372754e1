"""Run directories: safetensors + architecture.json rebuild the pruned model without pickle."""

import json

import pytest
import torch

import metaprune
from metaprune.errors import ModelError, WeightsError
from metaprune.models import create_model
from metaprune.prune.criteria import get_criterion
from metaprune.prune.saving import save_run
from metaprune.prune.structured import StructuredPruner

X = torch.randn(1, 1, 16, 16)


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "mlp", "vit_tiny"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, name):
    model = create_model(name, num_classes=10, in_channels=1, image_size=16).eval()
    pruner = StructuredPruner(model, X, get_criterion("group_l2"))
    pruner.prune_to(model, 0.4)
    save_run(tmp_path, model, example_input=X, history=pruner.history, plan=pruner.plan(0.4))
    loaded = metaprune.load_run(tmp_path)
    inputs = torch.randn(5, 1, 16, 16)
    assert torch.equal(loaded(inputs), model(inputs))
    assert (tmp_path / "plan.json").is_file() and not loaded.training


def test_masked_weights_are_baked_on_save(tmp_path):
    from torch.nn.utils import prune

    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8).eval()
    prune.random_unstructured(model.get_submodule("layers.1"), "weight", amount=0.5)
    x = torch.randn(3, 1, 8, 8)
    save_run(tmp_path, model, example_input=x[:1])
    loaded = metaprune.load_run(tmp_path)
    assert torch.equal(loaded(x), model(x))
    assert not any(key.endswith(("_orig", "_mask")) for key in loaded.state_dict())


def test_user_model_needs_a_dense_instance(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(1, 4, 4)
    pruner = StructuredPruner(model, x, get_criterion("l1"))
    pruner.prune_to(model, 0.5)
    save_run(tmp_path, model, example_input=x, history=pruner.history)
    with pytest.raises(ModelError, match="dense instance"):
        metaprune.load_run(tmp_path)
    fresh = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    assert torch.equal(metaprune.load_run(tmp_path, model=fresh)(x), model(x))


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
    save_run(tmp_path, model, example_input=torch.randn(1, 1, 8, 8))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(WeightsError, match="corrupt"):
        metaprune.load_run(tmp_path)


def test_missing_or_foreign_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        metaprune.load_run(tmp_path / "nope")
    with pytest.raises(WeightsError, match="architecture.json"):
        metaprune.load_run(tmp_path)
    (tmp_path / "architecture.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(WeightsError, match="format"):
        metaprune.load_run(tmp_path)
