"""Latency budgets, channel rounding and their command line (issue 19), on a mocked clock.

The mocked machine (as in test_latency_tables) runs a conv/linear layer in ``cin * cout / 1000`` ms
plus 0.5 ms per network, so a plan's measured latency is known exactly.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from cli_helpers import run_cli

import metaprune.latency.budget as budget_module
import metaprune.latency.profile as profile_module
from metaprune.errors import BudgetError, ConfigError, PruneError
from metaprune.latency.budget import (
    LATENCY_TOLERANCE,
    LatencyBudget,
    check_latency_met,
    prepare_latency_budget,
)
from metaprune.latency.profile import ProfileSettings
from metaprune.models import create_model
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.criteria import get_criterion
from metaprune.prune.groups import CONV_LINEAR, ModelGroups, layer_widths
from metaprune.prune.rounding import round_counts
from metaprune.prune.structured import prune_to_flops

FAST = ProfileSettings(points=3, plans=6, validation=1, warmup=0, repeats=1)


def _network_ms(model: torch.nn.Module, *_args, **_options) -> float:
    return 0.5 + sum(math.prod(layer_widths(module)) / 1000.0 for module in model.modules()
                     if isinstance(module, CONV_LINEAR))


@pytest.fixture
def mocked_clock(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(profile_module, "_time_layer", lambda layer, shape, cin, cout, settings: cin * cout / 1000.0)
    monkeypatch.setattr(profile_module, "measure_ms", _network_ms)
    monkeypatch.setattr(budget_module, "measure_ms", _network_ms)


@pytest.fixture
def resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    return create_model("resnet20", num_classes=10, in_channels=3, image_size=8).eval(), torch.zeros(1, 3, 8, 8)


@pytest.mark.parametrize("options, message", [
    ({}, "exactly one of --latency-speedup and --latency-budget"),
    ({"speedup": 2.0, "budget_ms": 3.0}, "exactly one"),
    ({"speedup": 0.5}, "must be >= 1"),
    ({"budget_ms": -1.0}, "must be > 0 ms"),
    ({"speedup": float("nan")}, "finite"),
])
def test_latency_budget_validation(options: dict, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        LatencyBudget(**options, settings=FAST)


def test_latency_speedup_is_met_on_the_clock(mocked_clock, resnet) -> None:
    model, example = resnet
    dense = _network_ms(model)
    setup = prepare_latency_budget(LatencyBudget(speedup=2.0, settings=FAST), model, example)
    assert setup.dense_ms == pytest.approx(dense) and setup.target_ms == pytest.approx(dense / 2)
    pruned = create_model("resnet20", num_classes=10, in_channels=3, image_size=8).eval()
    prune_to_flops(pruned, example, setup.ratio * setup.dense_predicted_ms, get_criterion("l1"),
                   cost_factory=setup.cost_factory)
    figures = check_latency_met(setup, model, pruned, example)
    assert figures["measured_speedup"] == pytest.approx(2.0, rel=0.02)
    assert abs(figures["prediction_error"]) < 1e-6 and figures["requested"] == 2.0


def test_a_missed_latency_is_one_error(mocked_clock, resnet, monkeypatch) -> None:
    model, example = resnet
    setup = prepare_latency_budget(LatencyBudget(speedup=2.0, settings=FAST), model, example)
    pruned = copy.deepcopy(model)  # too slow on the clock: it still runs at dense width
    slower = _network_ms(model) / 2 * (1 + 2 * LATENCY_TOLERANCE)
    monkeypatch.setattr(budget_module, "measure_ms", lambda network, *a, **o: _network_ms(network) if network is model
                        else slower)
    with pytest.raises(PruneError, match=r"measures 1.7\dx speed-up for a request of 2x speed-up \(beyond ±7%"):
        check_latency_met(setup, model, pruned, example)


def test_a_target_faster_than_the_smallest_network_is_refused(mocked_clock, resnet) -> None:
    model, example = resnet
    with pytest.raises(BudgetError, match=r"1000x latency speed-up asks for .* faster than the smallest network "
                                          r"--min-keep 0.1 allows"):
        prepare_latency_budget(LatencyBudget(speedup=1000.0, settings=FAST), model, example)
    with pytest.raises(ConfigError, match="latency budgets need a structured pattern"):
        prepare_latency_budget(LatencyBudget(speedup=2.0, settings=FAST), model, example, pattern="unstructured")


def test_round_counts_keeps_multiples_within_the_budget() -> None:
    class Additive:  # cost = sum of keep counts, so the budget is a channel count
        def flops(self, counts: torch.Tensor) -> float:
            return float(counts.sum())

    sizes = torch.tensor([16.0, 32.0, 64.0, 6.0])
    wanted = torch.tensor([13.0, 21.0, 43.0, 5.0])
    rounded = round_counts(wanted, sizes, torch.ones(4), torch.ones(4), 8, Additive(), target=82.0)
    assert rounded.tolist()[3] == 5.0  # narrower than one multiple: left alone
    assert all(value % 8 == 0 for value in rounded.tolist()[:3])
    assert Additive().flops(rounded) <= 82.0 and Additive().flops(rounded) >= 82.0 - 8


def test_prune_with_round_to_keeps_multiples_of_8(resnet) -> None:
    model, example = resnet
    cost = GroupCostModel(ModelGroups(model, example))
    target = 0.5 * cost.dense_flops
    groups, counts = prune_to_flops(model, example, target, get_criterion("l1"), round_to=8)
    assert all(count % 8 == 0 for count in counts.values())
    assert GroupCostModel(groups).dense_flops <= target * 1.02


def test_round_to_is_for_structured_patterns_only() -> None:
    from metaprune.prune.spec import PruningSpec

    with pytest.raises(ConfigError, match="--round-to and --ranking knapsack apply to structured patterns"):
        PruningSpec(pattern="unstructured", round_to=8)
    with pytest.raises(ConfigError, match="apply to structured patterns .*not n:m"):
        PruningSpec(pattern="n:m", ranking="knapsack")
    with pytest.raises(ConfigError, match="--round-to must be a whole number"):
        PruningSpec(round_to=0)


def test_cli_prune_to_a_latency_speedup_records_predicted_and_measured(mocked_clock, tmp_path, capsys) -> None:
    import json

    out = tmp_path / "run"
    args = ["prune", "--model", "resnet20", "--image-size", "8", "--epochs", "1", "--finetune-epochs", "0",
            "--no-latency", "--latency-speedup", "1.5", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["budget"]["latency_speedup"] == 1.5
    latency = report["extra"]["latency"]
    assert latency["measured_speedup"] == pytest.approx(1.5, rel=LATENCY_TOLERANCE)
    assert {"predicted_ms", "measured_ms", "dense_ms", "prediction_error"} <= set(latency)


@pytest.mark.parametrize("extra, message", [
    (["--latency-speedup", "1000"], "faster than the smallest network"),
    (["--latency-speedup", "2", "--budget", "0.5"], "give one budget"),
    (["--latency-speedup", "2", "--pattern", "unstructured"], "latency budgets need a structured pattern"),
])
def test_cli_bad_latency_targets_are_one_error_line(mocked_clock, tmp_path, capsys, extra, message) -> None:
    args = ["prune", "--model", "resnet20", "--image-size", "8", "--epochs", "1", "--finetune-epochs", "0",
            "--no-latency", "--out", str(tmp_path / "run"), *extra]
    code, _, err = run_cli(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and len(errors) == 1 and message in errors[0] and err.rstrip().endswith(errors[0])
