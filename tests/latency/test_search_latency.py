"""``metaprune search --latency-speedup / --latency-budget`` (issue 19), on a mocked clock.

The mocked machine (as in test_latency_budgets) runs a conv/linear layer in ``cin * cout / 1000`` ms
plus 0.5 ms per network, so a plan's measured latency is known exactly and the end-of-job check is
deterministic; the real clock is measured by ``benchmarks/latency.py``.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from cli_helpers import run_cli

import metaprune.latency.budget as budget_module
import metaprune.latency.profile as profile_module
from metaprune.data import load_digits_splits
from metaprune.errors import ConfigError
from metaprune.latency.budget import LATENCY_TOLERANCE, LatencyBudget
from metaprune.latency.profile import ProfileSettings
from metaprune.models import create_model
from metaprune.prune.groups import CONV_LINEAR, layer_widths

FAST = ProfileSettings(points=3, plans=6, validation=1, warmup=0, repeats=1)
TINY = ["--model", "resnet20", "--width", "0.5", "--image-size", "8", "--no-progress", "--epochs", "1"]


def _network_ms(model: torch.nn.Module, *_args, **_options) -> float:
    return 0.5 + sum(math.prod(layer_widths(module)) / 1000.0 for module in model.modules()
                     if isinstance(module, CONV_LINEAR))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One table cache for the module: the mocked machine's table is profiled once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def mocked_clock(monkeypatch: pytest.MonkeyPatch, cache) -> None:
    monkeypatch.setenv("METAPRUNE_CACHE", str(cache))
    monkeypatch.setattr(profile_module, "_time_layer", lambda layer, shape, cin, cout, settings: cin * cout / 1000.0)
    monkeypatch.setattr(profile_module, "measure_ms", _network_ms)
    monkeypatch.setattr(budget_module, "measure_ms", _network_ms)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a dense model starts training."""
    import metaprune.workflows.search as workflow

    def train_dense(*args, **kwargs):
        raise AssertionError("the dense model was trained before the job was refused")

    monkeypatch.setattr(workflow, "train_dense", train_dense)


@pytest.fixture(scope="module")
def digits():
    splits = load_digits_splits(image_size=8, seed=0)
    dense = create_model("resnet20", num_classes=10, in_channels=1, image_size=8, width=0.5).eval()
    return splits, dense


@pytest.mark.parametrize("method, extra", [
    ("uniform", {}), ("erk", {}), ("global_magnitude", {}), ("lamp", {}), ("dp", {}), ("halp", {}),
    ("optuna", {"trials": 3}),
])
def test_every_allocating_method_meets_a_measured_latency_speedup(mocked_clock, digits, method, extra) -> None:
    from metaprune.prune.budget import Budget
    from metaprune.specs import TaskSpec
    from metaprune.workflows.search import SearchOptions, run_search

    splits, dense = digits
    job = SearchOptions(budget=None, latency_budget=LatencyBudget(speedup=2.0, settings=FAST), method=method,
                        task=TaskSpec(model="resnet20", image_size=8, model_kwargs={"width": 0.5}), progress=False,
                        **extra)
    result, _ = run_search(job, splits=splits, dense=dense)
    latency = result.latency
    assert latency["measured_speedup"] == pytest.approx(2.0, rel=LATENCY_TOLERANCE)
    assert latency["predicted_latency_ratio"] == pytest.approx(0.5, rel=0.02)
    assert latency["flops_ratio"] == result.best_plan.flops_ratio  # the plan records its true FLOPs
    with pytest.raises(ConfigError, match="give exactly one budget"):
        SearchOptions(budget=Budget(0.5), latency_budget=LatencyBudget(speedup=2.0, settings=FAST))


@pytest.mark.slow  # ~100 s here: dense training, search, then the prune job with its fine-tune and figures
def test_cli_search_to_a_latency_speedup_writes_the_measured_check(mocked_clock, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli(["search", "--latency-speedup", "1.5", "--method", "uniform", "--prune",
                                 "--finetune-epochs", "0", "--out", str(out), *TINY], capsys)
    assert code == 0, err
    summary = json.loads((out / "search.json").read_text())
    assert summary["latency"]["measured_speedup"] == pytest.approx(1.5, rel=LATENCY_TOLERANCE)
    assert {"predicted_ms", "measured_ms", "dense_ms", "prediction_error", "flops_ratio"} <= set(summary["latency"])
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert float(rows[0]["latency_ratio"]) == pytest.approx(1 / 1.5, rel=0.02) and "flops_ratio" not in rows[0]
    report = json.loads((out / "report.json").read_text())  # --prune: the best plan, fine-tuned, latency recorded
    assert report["extra"]["latency"]["measured_speedup"] == summary["latency"]["measured_speedup"]
    assert "measured latency" in " ".join(stdout.split()) and "1.5x latency speed-up" in " ".join(stdout.split())


def test_cli_search_to_a_latency_budget_in_ms(mocked_clock, tmp_path, capsys) -> None:
    dense_ms = _network_ms(create_model("resnet20", num_classes=10, in_channels=1, image_size=8, width=0.5))
    out = tmp_path / "run"
    code, _, err = run_cli(["search", "--latency-budget", f"{0.6 * dense_ms:.4f}", "--method", "global_magnitude",
                            "--out", str(out), *TINY], capsys)
    assert code == 0, err
    latency = json.loads((out / "search.json").read_text())["latency"]
    assert latency["measured_ms"] == pytest.approx(0.6 * dense_ms, rel=LATENCY_TOLERANCE)


def test_a_missed_latency_fails_the_search_in_one_line(mocked_clock, monkeypatch, tmp_path, capsys) -> None:
    dense_ms = _network_ms(create_model("resnet20", num_classes=10, in_channels=1, image_size=8, width=0.5))
    # the clock of the end-of-job check: every pruned network runs 30% slower than the table said
    monkeypatch.setattr(budget_module, "measure_ms", lambda model, *a, **o: (
        _network_ms(model) if _network_ms(model) == dense_ms else 1.3 * _network_ms(model)))
    out = tmp_path / "run"
    code, _, err = run_cli(["search", "--latency-speedup", "2", "--method", "uniform", "--out", str(out), *TINY],
                           capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and len(errors) == 1 and "for a request of 2x speed-up (beyond ±7%" in errors[0], err
    assert not (out / "best_plan.json").exists()  # a plan that misses its promise is not written


@pytest.mark.parametrize("extra, message", [
    (["--latency-speedup", "1000"], "faster than the smallest network --min-keep 0.1 allows"),
    (["--latency-budget", "0.001"], "faster than the smallest network"),
    (["--latency-speedup", "0.5"], "--latency-speedup must be >= 1"),
    (["--latency-budget", "-3"], "--latency-budget must be > 0 ms"),
    (["--latency-speedup", "2", "--budget", "0.5"], "give one budget"),
    (["--latency-speedup", "2", "--latency-budget", "3"], "exactly one of --latency-speedup and --latency-budget"),
    (["--latency-speedup", "2", "--method", "tas"], "--method tas cannot take a latency budget"),
    (["--latency-speedup", "2", "--method", "dass"], "--method dass cannot take a latency budget"),
    (["--latency-speedup", "2", "--latency-runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
])
def test_bad_latency_targets_are_refused_before_training(mocked_clock, no_training, tmp_path, capsys, extra,
                                                         message) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(["search", "--method", "uniform", "--out", str(out), *TINY, "--epochs", "50", *extra],
                           capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and len(errors) == 1 and message in errors[0], err
    assert not (out / "dense.safetensors").exists()


def test_a_latency_space_prices_channels_by_predicted_latency(mocked_clock, digits) -> None:
    """The space's cost is the table's prediction; the plan it writes still records its true FLOPs ratio."""
    from metaprune.latency import LatencyCostModel, load_or_profile
    from metaprune.prune.budget import Budget
    from metaprune.search import SearchSpace

    _, dense = digits
    example = torch.zeros(1, 1, 8, 8)
    table, _, _ = load_or_profile(dense, example, FAST)
    space = SearchSpace(dense, example, Budget(0.5), cost_factory=lambda groups: LatencyCostModel(groups, table))
    flops = SearchSpace(dense, example, Budget(0.5))
    assert space.cost_kind == "latency" and flops.cost_kind == "flops"
    ratios = space.project(torch.full((len(space),), 0.5, dtype=torch.float64))
    assert space.flops_ratio(ratios) == pytest.approx(0.5, rel=0.02)
    plan = space.to_plan(ratios)
    assert plan.flops_ratio == pytest.approx(flops.flops_ratio(ratios), abs=1e-6) and plan.flops_ratio != \
        pytest.approx(0.5, rel=0.02)
