"""TAS: the masked search network is the pruned network, expected FLOPs are exact when one-hot, plans meet the budget."""

from __future__ import annotations

import copy

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.flops import count_flops
from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.prune.plan import PrunePlan
from metaprune.search.nas.depth_search import DepthSearch, drop_blocks, residual_stages
from metaprune.search.nas.tas import TASConfig, TASSearch, derive_network, tas_search, train_with_distillation
from metaprune.search.space import SearchSpace

TINY = dict(epochs=2, steps_per_epoch=2, batch_size=16)


def tiny_space(name: str = "resnet20", speedup: float = 2.0, image_size: int = 8) -> SearchSpace:
    torch.manual_seed(0)
    width = {"width": 0.5} if name.startswith("resnet") else {"width": 0.25}
    model = create_model(name, num_classes=10, in_channels=1, image_size=image_size, **width).eval()
    return SearchSpace(model, torch.randn(1, 1, image_size, image_size), Budget.from_speedup(speedup))


def pick_one_hot(search: TASSearch, generator: torch.Generator) -> None:
    """Put all probability on one random candidate of every width and depth distribution."""
    logits = list(search.widths.logits) + (list(search.depth.logits) if search.depth else [])
    with torch.no_grad():
        for vector in logits:
            vector.fill_(-1e4)
            vector[int(torch.randint(len(vector), (1,), generator=generator))] = 1e4


def pruned_copy(space: SearchSpace, search: TASSearch) -> torch.nn.Module:
    """The network of the argmax architecture, pruned physically (no projection onto the budget)."""
    depths = search.depth.argmax_depths() if search.depth else {}
    kept = {name for name, _ in drop_blocks(copy.deepcopy(space.model), depths).named_modules()}
    ratios = {name: float(ratio) for name, ratio in zip(space.names, search.widths.argmax_ratios()) if name in kept}
    return derive_network(space.model, space.example_input, PrunePlan("channel", ratios, min_keep=space.min_keep), depths)


@pytest.mark.parametrize("name, depth", [("resnet20", False), ("resnet20", True), ("vgg11", False)])
def test_expected_flops_equal_exact_flops_when_distributions_are_one_hot(name, depth):
    space = tiny_space(name)
    search = TASSearch(space, None, TASConfig(search_depth=depth))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        pick_one_hot(search, generator)
        expected = float(search.expected_flops().detach())
        assert expected == pytest.approx(count_flops(pruned_copy(space, search), space.example_input), rel=1e-6)


def test_expected_flops_are_differentiable_in_every_logit():
    search = TASSearch(tiny_space(), None, TASConfig(search_depth=True))
    search.expected_flops().backward()
    assert all(vector.grad is not None and vector.grad.abs().sum() > 0 for vector in search.arch_parameters())


def test_search_network_at_one_hot_widths_computes_the_pruned_network():
    space = tiny_space("resnet20")
    search = TASSearch(space, None, TASConfig())
    pick_one_hot(search, torch.Generator().manual_seed(2))
    search.widths.use_argmax()
    inputs = torch.randn(4, 1, 8, 8)
    with torch.no_grad(), search.attached() as network:
        masked = network.eval()(inputs)
    with torch.no_grad():
        pruned = pruned_copy(space, search).eval()(inputs)
    assert torch.allclose(masked, pruned, atol=1e-5)


def test_residual_stages_are_found_and_blocks_dropped():
    space = tiny_space("resnet20")
    assert residual_stages(space.model, space.example_input) == ["layer1", "layer2", "layer3"]
    shallow = drop_blocks(copy.deepcopy(space.model), {"layer1": 1, "layer3": 2})
    assert len(shallow.layer1) == 1 and len(shallow.layer3) == 2 and shallow(space.example_input).shape == (1, 10)
    with pytest.raises(ConfigError, match="no residual stage"):
        DepthSearch(tiny_space("vgg11").model, space.example_input)


@pytest.mark.parametrize("name, speedup, depth", [("resnet20", 2.0, False), ("resnet20", 4.0, True), ("vgg11", 4.0, False)])
def test_the_derived_network_meets_the_budget_within_five_percent(name, speedup, depth, digits8):
    space = tiny_space(name, speedup)
    result = tas_search(space, digits8, config=TASConfig(search_depth=depth, **TINY))
    network = derive_network(space.model, space.example_input, result.plan, result.depths)
    ratio = count_flops(network, space.example_input) / count_flops(space.model, space.example_input)
    assert ratio == pytest.approx(1 / speedup, rel=0.05)
    assert result.plan.flops_ratio == pytest.approx(ratio, rel=1e-3)
    assert len(result.history) == 2 and set(result.width_probabilities) == set(space.names)


def test_architecture_updates_move_toward_the_budget(digits8):
    space = tiny_space("resnet20", 4.0)
    search = TASSearch(space, None, TASConfig(epochs=1, steps_per_epoch=6, batch_size=16, arch_lr=0.1))
    before = float(search.expected_flops().detach())
    search.search(digits8)
    assert float(search.expected_flops().detach()) < before


def test_interpolating_alignment_searches_and_derives_a_plan(digits8):
    space = tiny_space("resnet20", 2.0)
    result = tas_search(space, digits8, config=TASConfig(alignment="interpolate", epochs=1, steps_per_epoch=2,
                                                        batch_size=16))
    assert result.plan.flops_ratio == pytest.approx(0.5, rel=0.02)


def test_derived_network_trains_with_distillation(digits8):
    space = tiny_space("resnet20", 2.0)
    result = tas_search(space, digits8, config=TASConfig(epochs=1, steps_per_epoch=1, batch_size=16))
    student = derive_network(space.model, space.example_input, result.plan, result.depths)
    history = train_with_distillation(student, space.model, digits8, epochs=1, batch_size=128)
    assert len(history.train_loss) == 1 and history.train_loss[0] > 0


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(tolerance=1.5), dict(arch_lr=0.0), dict(alignment="cubic"),
                                 dict(fractions=(0.0, 0.5))])
def test_bad_tas_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        TASSearch(tiny_space(), None, TASConfig(**bad))
