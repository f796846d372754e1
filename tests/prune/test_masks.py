"""Mask pruning: budgets, N:M, monotone masks, training with masks, baking masks."""

import pytest
import torch
import torch.nn.functional as F

from metaprune.errors import BudgetError, ConfigError
from metaprune.flops import effective_flops
from metaprune.models import create_model
from metaprune.prune.criteria import get_criterion
from metaprune.prune.masks import (
    MaskPruner,
    check_n_m,
    get_masks,
    layer_densities,
    n_m_mask,
    remove_masks,
    set_masks,
    weight_gradients,
)

X = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
# vgg11 at full width has 9M weights; a quarter width keeps the test fast with the same layers
MODELS = {"resnet20": {}, "vgg11": {"width": 0.25}, "mlp": {}, "vit_tiny": {}}


def _model(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, image_size=16, **MODELS[name]).eval()


def _calibration(n=16):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _train_steps(model, optimizer, steps=5):
    inputs, targets = _calibration(32)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("ranking", ["global", "local"])
@pytest.mark.parametrize("criterion", ["random", "l1", "lamp", "taylor"])
@pytest.mark.parametrize("name", list(MODELS))
def test_effective_flops_meet_half_and_tenth_budgets_within_two_percent(name, criterion, ranking):
    model = _model(name)
    pruner = MaskPruner(model, X, get_criterion(criterion), ranking=ranking, calibration=_calibration())
    assert effective_flops(model, X) == pytest.approx(pruner.dense_flops)
    for ratio in (0.5, 0.1):
        pruner.prune_to(model, ratio)
        assert effective_flops(model, X) == pytest.approx(ratio * pruner.dense_flops, rel=0.02)
        assert pruner.mask_flops(model) == pytest.approx(ratio * pruner.dense_flops, rel=0.02)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_weights_stay_zero_after_optimizer_steps_with_weight_decay(optimizer):
    model = _model("resnet20")
    MaskPruner(model, X, get_criterion("l1")).prune_to(model, 0.3)
    masks = get_masks(model)
    before = {name: model.get_submodule(name).weight_orig.detach().clone() for name in masks}
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    _train_steps(model, opt)
    model(X)
    for name, mask in masks.items():
        module = model.get_submodule(name)
        assert not module.weight_orig.equal(before[name])  # training really moved the weights
        assert torch.all(module.weight[~mask] == 0)
        assert torch.equal(get_masks(model)[name], mask)


def test_global_magnitude_keeps_every_weight_above_one_threshold():
    model = _model("mlp")
    with torch.no_grad():
        model.layers[3].weight.mul_(3.0)  # same init scale as layers.1 otherwise
    pruner = MaskPruner(model, X, get_criterion("l1"), min_density=0.001)
    pruner.prune_to(model, 0.3)
    kept, dropped = [], []
    for name, mask in get_masks(model).items():
        magnitude = model.get_submodule(name).weight_orig.detach().abs()
        kept.append(magnitude[mask])
        dropped.append(magnitude[~mask])
    assert torch.cat(kept).min() >= torch.cat(dropped).max()
    assert pruner.keep_ratios["layers.3"] > 2 * pruner.keep_ratios["layers.1"]  # one threshold, unequal densities


def test_local_ranking_gives_every_layer_the_same_density():
    model = _model("resnet20")
    pruner = MaskPruner(model, X, get_criterion("l1"), ranking="local")
    pruner.prune_to(model, 0.4)
    densities = [layer_densities(model)[name] for name in pruner.layers]
    assert max(densities) - min(densities) < 0.01
    assert densities[0] == pytest.approx(0.4, abs=0.02)


def test_min_density_floor_holds_and_an_unreachable_budget_is_a_budget_error():
    model = _model("mlp")
    pruner = MaskPruner(model, X, get_criterion("l1"), min_density=0.2)
    pruner.prune_to(model, 0.21)
    assert all(pruner.keep_ratios[name] >= 0.2 for name in pruner.layers)
    with pytest.raises(BudgetError, match="min_density"):
        pruner.prune_to(model, 0.1)


def test_masks_only_shrink_over_repeated_prune_to_calls():
    model = _model("vit_tiny")
    pruner = MaskPruner(model, X, get_criterion("random", seed=3))
    previous = None
    for ratio in (0.8, 0.5, 0.3):
        pruner.prune_to(model, ratio)
        masks = get_masks(model)
        if previous is not None:
            assert all(torch.all(masks[name] <= previous[name]) for name in masks)
            assert sum(int(m.sum()) for m in masks.values()) < sum(int(m.sum()) for m in previous.values())
        previous = masks
    pruner.prune_to(model, 0.9)  # already below: nothing changes
    assert all(torch.equal(get_masks(model)[name], previous[name]) for name in previous)


def test_n_m_keeps_the_two_largest_of_every_four_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, 2.0, 1.0, 0.0]])
    expected = torch.tensor([[False, True, True, False, True, True, False, False]])
    assert torch.equal(n_m_mask(scores, 2, 4), expected)
    assert check_n_m(scores * expected, 2, 4)
    assert not check_n_m(scores, 2, 4)
    assert not check_n_m(torch.ones(2, 6), 2, 4)  # 4 does not divide 6


def test_n_m_pattern_holds_exactly_after_training_steps():
    model = _model("vit_tiny")
    pruner = MaskPruner(model, X, get_criterion("l1"), pattern="n:m", n_m=(2, 4))
    pruner.prune_to(model, 0.9)  # the ratio is ignored: n:m fixes the density at n/m
    _train_steps(model, torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05))
    model(X)
    for name in pruner.layers:
        weight = model.get_submodule(name).weight
        assert check_n_m(weight, 2, 4)
        assert layer_densities(model)[name] == 0.5
    expected = pruner.fixed_flops + 0.5 * (pruner.dense_flops - pruner.fixed_flops)
    assert pruner.mask_flops(model) == pytest.approx(expected)
    plan = pruner.plan(0.5)
    assert plan.pattern == "n:m" and plan.n_m == (2, 4) and set(plan.keep_ratios.values()) == {0.5}


def test_n_m_on_convolutions_groups_the_flattened_input_dimension():
    model = _model("resnet20")
    pruner = MaskPruner(model, X, get_criterion("l2"), pattern="n:m", n_m=(1, 4), ignored_layers=["conv1"])
    pruner.prune_to(model, 0.5)
    model(X)
    weight = model.get_submodule(pruner.layers[0]).weight
    runs = (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1)
    assert runs.max() == 1


def test_n_m_with_a_non_dividing_m_is_a_config_error():
    with pytest.raises(ConfigError, match="conv1"):
        MaskPruner(_model("resnet20"), X, get_criterion("l1"), pattern="n:m", n_m=(2, 4))
    with pytest.raises(ConfigError, match="divide"):
        MaskPruner(_model("mlp"), X, get_criterion("l1"), pattern="n:m", n_m=(2, 7))


def test_invalid_configurations_are_config_errors():
    model = _model("mlp")
    with pytest.raises(ConfigError, match="bn_scale"):
        MaskPruner(model, X, get_criterion("bn_scale")).prune_to(model, 0.5)
    with pytest.raises(ConfigError, match="calibration"):
        MaskPruner(model, X, get_criterion("taylor"))
    with pytest.raises(ConfigError, match="StructuredPruner"):
        MaskPruner(model, X, get_criterion("l1"), pattern="channel")
    with pytest.raises(ConfigError, match="ranking"):
        MaskPruner(model, X, get_criterion("l1"), ranking="best")
    with pytest.raises(ConfigError, match="min_density"):
        MaskPruner(model, X, get_criterion("l1"), min_density=0.0)
    with pytest.raises(ConfigError, match="not found"):
        MaskPruner(model, X, get_criterion("l1"), ignored_layers=["nope"])


def test_remove_masks_bakes_the_same_zeros_with_identical_outputs():
    model = _model("resnet20")
    MaskPruner(model, X, get_criterion("lamp")).prune_to(model, 0.25)
    masks = get_masks(model)
    inputs = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        masked_output = model(inputs)
    remove_masks(model)
    assert get_masks(model) == {}
    assert not any(key.endswith(("_orig", "_mask")) for key in model.state_dict())
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert isinstance(weight, torch.nn.Parameter)
        assert torch.all(weight[~mask] == 0)
        assert layer_densities(model)[name] == pytest.approx(float(mask.float().mean()), abs=1e-3)
    with torch.no_grad():
        assert torch.equal(model(inputs), masked_output)


def test_set_masks_round_trips_and_validates():
    model = _model("mlp")
    first, second = "layers.1", "layers.3"
    weight = model.get_submodule(first).weight
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    set_masks(model, {first: mask})
    assert torch.equal(get_masks(model)[first], mask)
    replacement = ~mask
    set_masks(model, {first: replacement})  # overwrites, does not stack with the first mask
    assert torch.equal(get_masks(model)[first], replacement)
    assert torch.equal(model.get_submodule(first).weight != 0, replacement & (model.get_submodule(first).weight_orig != 0))
    with pytest.raises(ConfigError, match="shape"):
        set_masks(model, {first: mask[:1]})
    with pytest.raises(ConfigError, match="Conv2d/Linear"):
        set_masks(model, {"missing": mask})
    assert second not in get_masks(model)


def test_weight_gradients_reach_masked_positions():
    model = _model("mlp")
    name = "layers.1"
    set_masks(model, {name: torch.zeros_like(model.get_submodule(name).weight, dtype=torch.bool)})
    gradient = weight_gradients(model, [name], _calibration())[name]
    assert gradient.abs().sum() > 0  # dense gradient, although every weight is masked
    assert model.get_submodule(name).weight_orig.grad is None
