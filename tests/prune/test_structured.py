"""Structured pruning: budget accuracy, exactness of removal, min-keep, recipes."""

import math

import pytest
import torch

from metaprune.errors import BudgetError, ConfigError, PruneError
from metaprune.flops import count_flops
from metaprune.models import create_model
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.criteria import get_criterion, standalone_criteria
from metaprune.prune.groups import ModelGroups
from metaprune.prune.heads import remove_heads
from metaprune.prune.structured import StructuredPruner, apply_plan, prune_to_flops, score_groups

MODELS = ["resnet20", "vgg11", "mlp", "vit_tiny"]
X = torch.randn(1, 1, 16, 16)


def _model(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, image_size=16).eval()


def _calibration():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 16, 16, generator=generator), torch.randint(0, 10, (16,), generator=generator)


@pytest.mark.parametrize("criterion", standalone_criteria())
@pytest.mark.parametrize("name", MODELS)
def test_every_criterion_meets_the_budget_within_two_percent(name, criterion):
    model = _model(name)
    dense = count_flops(model, X)
    prune_to_flops(model, X, 0.25 * dense, get_criterion(criterion), calibration=_calibration())
    assert count_flops(model, X) == pytest.approx(0.25 * dense, rel=0.02)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 10)


@pytest.mark.parametrize("name", MODELS)
def test_local_ranking_meets_the_budget(name):
    model = _model(name)
    dense = count_flops(model, X)
    prune_to_flops(model, X, 0.5 * dense, get_criterion("l1"), ranking="local")
    assert count_flops(model, X) == pytest.approx(0.5 * dense, rel=0.02)


@pytest.mark.parametrize("name", MODELS)
def test_analytic_cost_model_agrees_with_flop_counter(name):
    model = _model(name)
    cost = GroupCostModel(ModelGroups(model, X))
    assert cost.dense_flops == count_flops(model, X)
    _, keep = prune_to_flops(model, X, 0.4 * cost.dense_flops, get_criterion("random"))
    predicted = cost.flops(torch.tensor([float(keep[name]) for name in cost.group_names]))
    assert predicted == pytest.approx(count_flops(model, X), rel=1e-9)


def test_min_keep_stops_layers_collapsing():
    model = _model("resnet20")
    dense_sizes = {group.name: group.size for group in ModelGroups(model, X).groups}
    _, keep = prune_to_flops(model, X, 0.08 * count_flops(model, X), get_criterion("group_l2"), min_keep=0.25)
    for name, count in keep.items():
        assert count >= math.ceil(0.25 * dense_sizes[name])


def test_infeasible_budget_is_a_clear_error():
    model = _model("mlp")
    with pytest.raises(BudgetError, match="min_keep"):
        prune_to_flops(model, X, 0.001 * count_flops(model, X), get_criterion("l2"), min_keep=0.5)


def test_removing_zero_channels_preserves_outputs_exactly():
    model = _model("resnet20").double()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    zero = [1, 5, 9]
    with torch.no_grad():  # make channels of layer1.0's inner group contribute nothing
        block = model.layer1[0]
        block.conv1.weight[zero] = 0
        block.bn1.weight[zero] = 0
        block.bn1.bias[zero] = 0
        block.conv2.weight[:, zero] = 0
    before = model(x)
    groups = ModelGroups(model, x[:1])
    group = groups.by_name["layer1.0.conv1"]
    scores = score_groups(groups, get_criterion("group_l2"))[group.name]
    assert set(torch.argsort(scores)[:3].tolist()) == set(zero)
    groups.remove(group, zero)
    assert model.layer1[0].conv1.out_channels == 13
    assert torch.max(torch.abs(model(x) - before)).item() < 1e-12


def test_removing_a_silent_attention_head_preserves_outputs():
    model = _model("vit_tiny").double()
    attention = model.blocks[0].attn
    width = attention.qkv.out_features // 3 // attention.num_heads
    with torch.no_grad():
        attention.proj.weight[:, width:2 * width] = 0  # head 1 writes nothing
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    before = model(x)
    remove_heads(attention, [1])
    assert attention.num_heads == 3
    assert torch.max(torch.abs(model(x) - before)).item() < 1e-12
    with pytest.raises(PruneError):
        remove_heads(attention, [0, 1, 2])


def test_head_pattern_prunes_only_heads():
    model = _model("vit_tiny")
    pruner = StructuredPruner(model, X, get_criterion("l2"), pattern="head", min_keep=0.25)
    pruner.prune_to(model, 0.8)
    assert all(entry["kind"] == "head" for entry in pruner.history) and pruner.history
    with pytest.raises(ConfigError, match="attention"):
        StructuredPruner(_model("mlp"), X, get_criterion("l2"), pattern="head").prune_to(_model("mlp"), 0.5)


def test_plan_reapplies_as_a_recipe():
    model = _model("resnet20")
    pruner = StructuredPruner(model, X, get_criterion("group_l2"))
    pruner.prune_to(model, 0.5)
    plan = pruner.plan(0.5)
    fresh = _model("resnet20")
    apply_plan(fresh, X, plan, get_criterion("group_l2"))
    assert count_flops(fresh, X) == count_flops(model, X)
    assert torch.allclose(fresh(X), model(X))


def test_iterative_pruning_accumulates_a_replayable_history():
    from metaprune.prune.groups import replay

    model = _model("vgg11")
    pruner = StructuredPruner(model, X, get_criterion("l1"))
    for ratio in (0.7, 0.5, 0.3):
        pruner.prune_to(model, ratio)
        assert count_flops(model, X) == pytest.approx(ratio * pruner.dense_flops, rel=0.02)
    rebuilt = _model("vgg11")
    replay(rebuilt, X, pruner.history)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(X), model(X))


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "vit_tiny"])
def test_coupled_parameters_reproduce_group_l2_scores(name):
    model = _model(name)
    groups = ModelGroups(model, X)
    parameters = dict(model.named_parameters())
    scores = score_groups(groups, get_criterion("group_l2"))
    for group in groups.groups:
        squares = torch.zeros(groups.current_size(group), dtype=torch.float64)
        for parameter_name, dim, idxs, channels in groups.coupled_parameters(group):
            if parameter_name.endswith("weight"):
                values = parameters[parameter_name].detach().index_select(dim, idxs).movedim(dim, 0)
                squares.index_add_(0, channels, values.reshape(len(idxs), -1).pow(2).sum(1).double())
        assert torch.allclose(squares.sqrt(), scores[group.name]), group.name
