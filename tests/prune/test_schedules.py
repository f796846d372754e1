"""Pruning schedules: budgets reached, step sequences, rewinding, regrowth, registry."""

import pytest
import torch

from metaprune.data import calibration_batch, make_loaders
from metaprune.errors import BudgetError, ConfigError
from metaprune.flops import count_flops, effective_flops
from metaprune.models import create_model
from metaprune.prune.criteria import get_criterion
from metaprune.prune.masks import MaskPruner, get_masks, layer_densities
from metaprune.prune.schedules import (
    SCHEDULES,
    Gradual,
    Iterative,
    get_schedule,
    gradual_ratio,
    rewind_weights,
    split_epochs,
)
from metaprune.prune.structured import StructuredPruner
from metaprune.train import fit

X8 = torch.zeros(1, 1, 8, 8)


def _model(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, image_size=8, **kwargs)


def _trainer(splits):
    loader = make_loaders(splits, batch_size=128, seed=0)[0]

    def train(model, epochs, on_step=None):
        fit(model, loader, epochs=epochs, lr=0.02, on_step=on_step, progress=False)

    return train


class SpyPruner:
    """Records the ratios it is asked for and delegates to a real pruner."""

    def __init__(self, inner):
        self.inner, self.ratios = inner, []
        self.uses_masks = inner.uses_masks
        self.calibration = getattr(inner, "calibration", None)

    def prune_to(self, model, flops_ratio):
        self.ratios.append(flops_ratio)
        self.inner.prune_to(model, flops_ratio)

    def plan(self, flops_ratio=None):
        return self.inner.plan(flops_ratio)


def _step_through(total_steps):
    """A train stub that only calls ``on_step`` for ``total_steps`` steps."""

    def train(model, epochs, on_step=None):
        for step in range(1, total_steps + 1):
            if on_step is not None:
                on_step(model, step, total_steps)

    return train


def test_split_epochs_and_gradual_ratio_by_hand():
    assert split_epochs(7, 3) == [2, 2, 3]
    assert split_epochs(3, 3) == [1, 1, 1]
    assert split_epochs(1, 3) == [0, 0, 1]
    assert gradual_ratio(0, 10, 0.2) == 1.0
    assert gradual_ratio(5, 10, 0.2) == pytest.approx(0.2 + 0.8 * 0.125)
    assert gradual_ratio(10, 10, 0.2) == 0.2 == gradual_ratio(15, 10, 0.2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_ends_within_two_percent_of_the_target_with_masks(schedule, digits8):
    model = _model("mlp")
    pruner = MaskPruner(model, X8, get_criterion("l1"), calibration=calibration_batch(digits8, n=64))
    model = get_schedule(schedule, steps=2).run(model, pruner, _trainer(digits8), 0.3, 2)
    assert effective_flops(model, X8) == pytest.approx(0.3 * pruner.dense_flops, rel=0.02)


@pytest.mark.parametrize("schedule", ["oneshot", "iterative", "gradual"])
def test_structured_schedules_end_within_two_percent_of_the_target(schedule, digits8):
    model = _model("mlp")
    dense = count_flops(model, X8)
    pruner = StructuredPruner(model, X8, get_criterion("group_l2"))
    model = get_schedule(schedule, steps=2, frequency=4).run(model, pruner, _trainer(digits8), 0.5, 1)
    assert count_flops(model, X8) == pytest.approx(0.5 * dense, rel=0.02)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_iterative_visits_the_geometric_targets_in_order_with_split_epochs():
    model = _model("mlp")
    spy = SpyPruner(MaskPruner(model, X8, get_criterion("l1")))
    epochs_seen = []
    Iterative(steps=3).run(model, spy, lambda _model, epochs, on_step=None: epochs_seen.append(epochs), 0.125, 7)
    assert spy.ratios == pytest.approx([0.5, 0.25, 0.125])
    assert epochs_seen == [2, 2, 3]


def test_gradual_ratios_are_monotone_and_end_on_the_target():
    model = _model("mlp")
    spy = SpyPruner(MaskPruner(model, X8, get_criterion("l1")))
    Gradual(frequency=4).run(model, spy, _step_through(40), 0.2, 1)
    pruning_steps = [4, 8, 12, 16, 20, 24, 28, 30]  # every 4th step up to 0.75 * 40, then that last step
    assert spy.ratios == pytest.approx([gradual_ratio(step, 30, 0.2) for step in pruning_steps])
    assert all(later < earlier for earlier, later in zip(spy.ratios, spy.ratios[1:]))
    assert spy.ratios[-1] == 0.2
    assert spy.inner.mask_flops(model) == pytest.approx(0.2 * spy.inner.dense_flops, rel=0.02)


def test_gradual_hook_asks_for_a_new_optimizer_only_on_pruning_steps():
    model = _model("mlp")
    answers = []

    def train(trained, epochs, on_step):
        answers.extend(bool(on_step(trained, step, 8)) for step in range(1, 9))

    Gradual(frequency=2, end_fraction=0.5).run(model, MaskPruner(model, X8, get_criterion("l1")), train, 0.5, 1)
    assert answers == [False, True, False, True, False, False, False, False]


def test_lottery_rewinds_surviving_weights_to_the_rewind_state():
    model = _model("mlp")
    torch.manual_seed(5)
    rewind_state = {key: torch.randn_like(value) for key, value in model.state_dict().items()}
    pruner = MaskPruner(model, X8, get_criterion("l1"))
    seen_masks = []

    def train(trained, epochs, on_step=None):
        masks = get_masks(trained)
        seen_masks.append(masks)
        for name, mask in masks.items():
            layer = trained.get_submodule(name)
            assert torch.equal(layer.weight_orig * mask, rewind_state[f"{name}.weight"] * mask)
            assert torch.equal(layer.bias, rewind_state[f"{name}.bias"])
        with torch.no_grad():  # "training" moves every weight away from the rewind point
            for parameter in trained.parameters():
                parameter.add_(1.0)

    model = get_schedule("lottery", steps=3, rewind_state=rewind_state).run(model, pruner, train, 0.2, 3)
    assert len(seen_masks) == 3
    densities = [sum(int(m.sum()) for m in masks.values()) for masks in seen_masks]
    assert densities[0] > densities[1] > densities[2]
    assert pruner.mask_flops(model) == pytest.approx(0.2 * pruner.dense_flops, rel=0.02)


def test_rewind_needs_a_matching_state():
    model = _model("mlp")
    with pytest.raises(ConfigError, match="no entry"):
        rewind_weights(model, {})
    bad = {key: torch.zeros(1) for key in model.state_dict()}
    with pytest.raises(ConfigError, match="shape"):
        rewind_weights(model, bad)


def test_regrow_keeps_density_on_schedule_and_moves_the_mask(digits8):
    model = _model("mlp")
    pruner = MaskPruner(model, X8, get_criterion("l1"), calibration=calibration_batch(digits8, n=64))
    spy = SpyPruner(pruner)
    events = []

    def train(trained, epochs, on_step):
        for step in range(1, 41):
            before = get_masks(trained)
            if on_step(trained, step, 40):
                events.append((pruner.mask_flops(trained), before, get_masks(trained)))

    get_schedule("regrow", frequency=4).run(model, spy, train, 0.3, 1)
    assert [flops for flops, _, _ in events] == pytest.approx([r * pruner.dense_flops for r in spy.ratios], rel=0.02)
    assert spy.ratios[-1] == 0.3
    revived = sum(int((after[name] & ~before[name]).sum()) for _, before, after in events[1:] for name in after)
    assert revived > 0  # masks that only shrank would revive nothing
    assert layer_densities(model)["layers.1"] < 1.0


def test_n_m_regrowth_moves_weights_within_their_runs_so_the_mask_stays_n_m(digits8):
    """Regrowth across runs left runs below n that the next N:M step never refilled: density ratcheted down."""
    from metaprune.prune.masks import check_n_m
    from metaprune.prune.schedules import drop_and_regrow

    model = _model("mlp")
    pruner = MaskPruner(model, X8, get_criterion("l1"), pattern="n:m", n_m=(2, 4),
                        calibration=calibration_batch(digits8, n=64))
    pruner.prune_to(model, 0.5)
    before = get_masks(model)
    moved = drop_and_regrow(model, 0.3, pruner.calibration, n_m=(2, 4))
    after = get_masks(model)
    for name, mask in after.items():
        assert check_n_m(mask.float(), 2, 4) and int(mask.sum()) == int(before[name].sum()) == mask.numel() // 2
        revived = after[name] & ~before[name]
        assert int(revived.sum()) == moved[name] > 0
        assert torch.all(model.get_submodule(name).weight_orig[revived] == 0)  # regrown weights start at zero


def test_n_m_regrow_schedule_ends_exactly_n_m(digits8):
    model = _model("mlp")
    pruner = MaskPruner(model, X8, get_criterion("l1"), pattern="n:m", n_m=(2, 4),
                        calibration=calibration_batch(digits8, n=64))
    model = get_schedule("regrow", frequency=2).run(model, pruner, _trainer(digits8), 0.5, 2)
    assert all(density == 0.5 for name, density in layer_densities(model).items() if name in pruner.layers)
    assert pruner.mask_flops(model) == pytest.approx(pruner.promised_flops_ratio(0.5) * pruner.dense_flops)


def test_mask_only_schedules_refuse_structured_pruners():
    model = _model("mlp")
    pruner = StructuredPruner(model, X8, get_criterion("l1"))
    for name in ("lottery", "regrow"):
        with pytest.raises(ConfigError, match="--pattern unstructured or n:m"):
            get_schedule(name).run(model, pruner, _step_through(1), 0.5, 1)


def test_regrow_needs_a_calibration_batch():
    model = _model("mlp")
    with pytest.raises(ConfigError, match="calibration"):
        get_schedule("regrow").run(model, MaskPruner(model, X8, get_criterion("l1")), _step_through(1), 0.5, 1)


def test_registry_and_option_validation():
    assert tuple(SCHEDULES) == ("oneshot", "iterative", "gradual", "lottery", "regrow")
    assert isinstance(get_schedule("gradual", steps=5), Gradual)  # steps belongs to other schedules
    assert get_schedule("iterative", steps=5).steps == 5
    with pytest.raises(ConfigError, match="unknown schedule 'cyclic'"):
        get_schedule("cyclic")
    with pytest.raises(ConfigError, match="unknown schedule options"):
        get_schedule("oneshot", stpes=3)
    with pytest.raises(ConfigError, match="steps"):
        get_schedule("iterative", steps=0)
    with pytest.raises(ConfigError, match="end_fraction"):
        get_schedule("gradual", end_fraction=1.5)
    model = _model("mlp")
    pruner = MaskPruner(model, X8, get_criterion("l1"))
    with pytest.raises(BudgetError):
        get_schedule("oneshot").run(model, pruner, _step_through(1), 1.5, 1)
    with pytest.raises(ConfigError, match="epochs"):
        get_schedule("oneshot").run(model, pruner, _step_through(1), 0.5, -1)
