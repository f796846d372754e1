"""DASS's sparse operations: exact top-k density, straight-through gradients to the scores, conversions."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.scored_ops import (
    ScoredConv2d,
    ScoredLinear,
    keep_count,
    materialize,
    score_layers,
    topk_mask,
    weight_density,
)


@pytest.mark.parametrize("density", [0.05, 0.1, 0.333, 0.5, 1.0])
def test_mask_density_equals_the_target_exactly(density):
    conv = ScoredConv2d(6, 10, 3, density=density)
    linear = ScoredLinear(37, 11, density=density)
    for layer in (conv, linear):
        kept = int(layer.mask().sum())
        assert kept == keep_count(layer.weight.numel(), density) == round(density * layer.weight.numel())
        assert int(layer.masked_weight().count_nonzero()) == kept


def test_mask_keeps_the_largest_scores_even_with_ties():
    scores = torch.tensor([[0.5, -3.0, 0.5], [0.5, 2.0, 0.1]])
    mask = topk_mask(scores, 0.5)
    assert int(mask.sum()) == 3 and mask[0, 1] == 1 and mask[1, 1] == 1 and mask[1, 2] == 0


def test_gradients_reach_the_scores_and_the_weights():
    torch.manual_seed(0)
    for layer, inputs in ((ScoredConv2d(3, 4, 3, padding=1, density=0.2), torch.randn(2, 3, 5, 5)),
                          (ScoredLinear(8, 5, density=0.2), torch.randn(2, 8))):
        layer(inputs).pow(2).sum().backward()
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
        assert layer.weight.grad is not None
        # Straight-through: the scores receive d loss / d mask = d loss / d (W * M) * W, pruned entries included.
        pruned = layer.mask() == 0
        assert layer.scores.grad[pruned].abs().sum() > 0
        assert layer.weight.grad[pruned].abs().sum() == 0


def test_training_the_scores_changes_the_mask():
    torch.manual_seed(0)
    layer = ScoredLinear(16, 4, density=0.25)
    before = layer.mask().clone()
    optimizer = torch.optim.SGD([layer.scores], lr=5.0)
    target = torch.randn(32, 4)
    inputs = torch.randn(32, 16)
    for _ in range(20):
        optimizer.zero_grad()
        (layer(inputs) - target).pow(2).mean().backward()
        optimizer.step()
    assert not torch.equal(before, layer.mask()) and int(layer.mask().sum()) == 16


def test_sparsify_and_materialize_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    inputs = torch.randn(2, 1, 8, 8)
    dense_output = model(inputs)
    assert torch.allclose(score_layers(copy.deepcopy(model), 1.0)(inputs), dense_output, atol=1e-6)
    score_layers(model, 0.3)
    sparse_output = model(inputs)
    assert isinstance(model[0], ScoredConv2d) and isinstance(model[3], ScoredLinear)
    assert weight_density(model) == pytest.approx(0.3, abs=0.01)
    materialize(model)
    assert type(model[0]) is nn.Conv2d and type(model[3]) is nn.Linear
    assert torch.allclose(model(inputs), sparse_output, atol=1e-6)
    assert weight_density(model) == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_bad_density_is_a_config_error(density):
    with pytest.raises(ConfigError, match="density"):
        ScoredLinear(4, 4, density=density)
