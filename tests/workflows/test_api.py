"""`metaprune.prune_model`: the one-call Python API on a user model outside the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import metaprune
from metaprune.errors import BudgetError, ConfigError, PruneError
from metaprune.flops import count_flops, effective_flops


class UserNet(nn.Module):
    """A small CNN written by a user (not in metaprune's model registry)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def data() -> tuple[TensorDataset, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(128, 1, 8, 8, generator=generator)
    targets = torch.randint(0, 10, (128,), generator=generator)
    return TensorDataset(inputs, targets), inputs[:2]


def test_channel_pruning_meets_the_budget_and_leaves_the_input_model_alone(data):
    dataset, example = data
    torch.manual_seed(0)
    model = UserNet()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    pruned, report = metaprune.prune_model(model, example, speedup=2, train_data=dataset, val_data=dataset,
                                           finetune_epochs=1)
    assert count_flops(pruned, example) == pytest.approx(count_flops(model, example) / 2, rel=0.02)
    assert report.speedup["flops"] == pytest.approx(2.0, rel=0.02)
    assert report.pruned.params < report.dense.params
    assert report.pruned.val_accuracy is not None and report.model == "UserNet"
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert pruned(example).shape == (2, 10)


def test_unstructured_pruning_counts_effective_flops(data):
    dataset, example = data
    torch.manual_seed(0)
    model = UserNet()
    pruned, report = metaprune.prune_model(model, example, budget=0.5, pattern="unstructured", criterion="l1")
    assert effective_flops(pruned, example) == pytest.approx(0.5 * count_flops(model, example), rel=0.02)
    assert report.pattern == "unstructured" and report.pruned.val_accuracy is None


@pytest.mark.parametrize(("options", "error", "message"), [
    ({}, BudgetError, "exactly one of"),
    ({"budget": 0.5, "criterion": "snip"}, ConfigError, "unknown criterion 'snip'"),
    ({"budget": 0.5, "finetune_epochs": 2}, ConfigError, "finetune_epochs > 0 needs train_data"),
    ({"budget": 0.5, "train_data": [1, 2]}, ConfigError, "DataLoader or a Dataset"),
    ({"budget": 0.5, "criterion": "meta"}, ConfigError, "--criterion meta needs --metanet"),
])
def test_bad_options_are_one_clear_error(data, options, error, message):
    _, example = data
    with pytest.raises(error, match=message):
        metaprune.prune_model(UserNet(), example, **options)


def test_a_dataloader_is_accepted_as_train_data(data):
    dataset, example = data
    loader = DataLoader(dataset, batch_size=32)
    pruned, report = metaprune.prune_model(UserNet(), example, speedup=2, criterion="taylor", train_data=loader)
    assert report.speedup["flops"] == pytest.approx(2.0, rel=0.02)
    assert report.criterion == "taylor"


def test_a_missed_budget_is_an_error_not_a_silent_result(data):
    """This net has 16 + 32 channels: a 4x budget cannot be met within 2 %, and prune_model says so."""
    dataset, example = data
    with pytest.raises(PruneError, match="keeps 0.2.* of the FLOPs for a budget of 0.2500"):
        metaprune.prune_model(UserNet(), example, speedup=4, train_data=dataset)
