"""The model registry: names, specs, rebuilds and argument errors."""

from __future__ import annotations

import json

import pytest
import torch

from metaprune.errors import ConfigError, ModelError
from metaprune.models import create_model, create_model_from_spec, list_models, model_spec, register_model

EXPECTED_MODELS = ["mlp", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "vgg19", "vit_tiny"]


def test_list_models_names_every_family():
    assert list_models() == EXPECTED_MODELS


def test_spec_records_every_constructor_argument_with_defaults():
    model = create_model("resnet20", num_classes=7, in_channels=3, image_size=32, width=0.5)
    assert model_spec(model) == {
        "name": "resnet20",
        "kwargs": {"num_classes": 7, "in_channels": 3, "image_size": 32, "width": 0.5},
    }
    assert model_spec(create_model("mlp"))["kwargs"]["hidden_sizes"] == [256, 128]


@pytest.mark.parametrize("name", EXPECTED_MODELS)
def test_spec_survives_json_and_rebuilds_identical_architecture(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=3, image_size=16)
    spec = json.loads(json.dumps(model_spec(model)))
    rebuilt = create_model_from_spec(spec)
    assert model_spec(rebuilt) == model_spec(model)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_model_spec_is_a_copy():
    model = create_model("mlp")
    model_spec(model)["kwargs"]["hidden_sizes"].append(3)
    assert model_spec(model)["kwargs"]["hidden_sizes"] == [256, 128]


def test_unknown_name_lists_known_models():
    with pytest.raises(ConfigError, match="resnet20.*vit_tiny"):
        create_model("resnet18")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet20", {"depth": 3}, "bad arguments for model 'resnet20'.*width"),
        ("resnet20", {"width": 0}, "width multiplier must be a positive"),
        ("vgg11", {"width": -1.0}, "width multiplier must be a positive"),
        ("mlp", {"num_classes": 0}, "num_classes must be a positive integer"),
        ("mlp", {"in_channels": 1.5}, "in_channels must be a positive integer"),
        ("mlp", {"hidden_sizes": (64, 0)}, "hidden_sizes must be a sequence of positive integers"),
        ("vit_tiny", {"image_size": 10}, "not divisible by patch_size 4"),
        ("vit_tiny", {"dim": 30, "num_heads": 4}, "not divisible by num_heads"),
        ("vit_tiny", {"depth": 0}, "depth must be a positive integer"),
    ],
)
def test_bad_arguments_raise_config_error(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model(name, **kwargs)


@pytest.mark.parametrize("spec", [None, {"kwargs": {}}, {"name": "mlp", "kwargs": [1]}])
def test_malformed_spec_raises_config_error(spec):
    with pytest.raises(ConfigError, match="a model spec must be"):
        create_model_from_spec(spec)


def test_model_spec_of_foreign_module_raises_model_error():
    with pytest.raises(ModelError, match="only models built by"):
        model_spec(torch.nn.Linear(2, 2))


def test_register_model_checks_signature_and_duplicates():
    with pytest.raises(ConfigError, match="must accept the arguments"):
        register_model("broken")(lambda num_classes: torch.nn.Identity())
    with pytest.raises(ConfigError, match="already registered"):
        register_model("mlp")(lambda num_classes, in_channels, image_size: torch.nn.Identity())
    assert list_models() == EXPECTED_MODELS
