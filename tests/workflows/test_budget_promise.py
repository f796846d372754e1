"""Every job ends by checking its promise: the final model meets the budget (±2 %), or the command fails with one line.

The check runs on the model the job hands back, after every step of the schedule and the
fine-tune; these tests force a schedule to miss and see the miss refused.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_helpers import run_cli
from torch import nn
from torch.utils.data import TensorDataset

import metaprune
from metaprune.errors import PruneError, SearchError
from metaprune.prune import schedule_gradual, schedule_steps
from metaprune.prune.masks import MaskPruner
from metaprune.prune.plan import PrunePlan
from metaprune.search.methods import SearchResult, TrialRecord, check_search_met

SMALL_RUN = ["--model", "mlp", "--image-size", "8", "--epochs", "1", "--finetune-epochs", "2", "--no-latency"]


def assert_one_error_line(code: int, err: str, expected: str) -> None:
    """Exit 1 and one ``error:`` line, the last one (progress lines of the stages may come before it)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and lines[-1] == errors[0], err
    assert expected in errors[0], errors[0]


def test_n_m_regrow_meets_the_n_m_promise(tmp_path, capsys):
    """`--pattern n:m --schedule regrow --speedup 2` once ended at 6.57x fewer FLOPs (13 % accuracy) with exit 0."""
    out = tmp_path / "run"
    code, _, err = run_cli(["prune", "--pattern", "n:m", "--schedule", "regrow", "--speedup", "2", *SMALL_RUN,
                            "--out", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    promised = report["budget"]["n_m_flops_ratio"]
    assert 0.5 < promised < 0.6  # 2:4 everywhere but the classifier
    assert report["pruned"]["flops"] / report["dense"]["flops"] == pytest.approx(promised, rel=0.02)
    assert set(report["layer_keep_ratios"].values()) == {0.5}


def test_a_schedule_that_breaks_the_n_m_pattern_fails_the_command(tmp_path, capsys, monkeypatch):
    """Regrowth across N:M runs (the old bug) ratchets the density down: the final check refuses it."""

    def regrow_across_runs(self, model, pruner, step, end_step):
        fraction = self.regrow_fraction * (1.0 + math.cos(math.pi * min(step, end_step) / end_step)) / 2.0
        schedule_gradual.drop_and_regrow(model, fraction, pruner.calibration)  # no n_m: moves across runs

    monkeypatch.setattr(schedule_gradual.Regrow, "_after_pruning", regrow_across_runs)
    code, _, err = run_cli(["prune", "--pattern", "n:m", "--schedule", "regrow", "--speedup", "2", *SMALL_RUN,
                            "--out", str(tmp_path / "run")], capsys)
    assert_one_error_line(code, err, "n/m density promises")
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("pattern", ["channel", "unstructured"])
def test_a_schedule_that_overshoots_the_budget_fails_the_command(tmp_path, capsys, monkeypatch, pattern):
    def overshoot(self, model, pruner, train, flops_ratio, epochs):
        pruner.prune_to(model, flops_ratio * 0.8)
        train(model, epochs)
        return model

    monkeypatch.setattr(schedule_steps.OneShot, "_run", overshoot)
    criterion = "l1" if pattern == "unstructured" else "group_l2"
    code, _, err = run_cli(["prune", "--pattern", pattern, "--criterion", criterion, "--speedup", "2", *SMALL_RUN,
                            "--out", str(tmp_path / "run")], capsys)
    assert_one_error_line(code, err, "for a budget of 0.5000")


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def test_prune_model_reports_the_n_m_promise_and_refuses_a_miss(monkeypatch):
    example = torch.randn(2, 4, 8, 8)
    _, report = metaprune.prune_model(TinyNet(), example, budget=0.5, pattern="n:m", criterion="l1")
    assert report.pruned.flops / report.dense.flops == pytest.approx(report.budget["n_m_flops_ratio"], rel=0.02)

    original = MaskPruner.prune_to

    def overshoot(self, model, flops_ratio):
        original(self, model, flops_ratio)
        self.n_m = None  # the N:M pruner then prunes further, like an unconstrained one
        original(self, model, flops_ratio * 0.5)
        self.n_m = (2, 4)

    monkeypatch.setattr(MaskPruner, "prune_to", overshoot)
    with pytest.raises(PruneError, match="n/m density promises"):
        metaprune.prune_model(TinyNet(), example, budget=0.5, pattern="n:m", criterion="l1")


def test_prune_model_refuses_a_fine_tune_that_revives_pruned_weights(monkeypatch):
    """The check reads the model after fine-tuning: weights that come back count."""
    from metaprune.workflows import api

    example = torch.randn(2, 4, 8, 8)
    data = TensorDataset(torch.randn(32, 4, 8, 8), torch.randint(0, 10, (32,)))

    def revive(model, *args, **kwargs):
        from metaprune.prune.masks import remove_masks

        remove_masks(model)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)

    monkeypatch.setattr(api, "fit", revive)
    with pytest.raises(PruneError, match="for a budget of 0.5000"):
        metaprune.prune_model(TinyNet(), example, budget=0.5, pattern="unstructured", criterion="l1",
                              train_data=data, finetune_epochs=1)


def _result(flops_ratio: float | None) -> SearchResult:
    plan = PrunePlan("channel", {"a": 0.5}, flops_ratio=flops_ratio)
    return SearchResult("optuna", plan, -1.0, [TrialRecord(0, [0.5], flops_ratio or 0.0, -1.0)])


def test_a_search_whose_best_plan_misses_the_budget_fails():
    check_search_met(_result(0.505), 0.5)
    for ratio in (0.45, 0.6, None):
        with pytest.raises(SearchError, match="budget of 0.5000"):
            check_search_met(_result(ratio), 0.5)


def test_search_command_checks_the_best_plan(tmp_path, capsys, monkeypatch):
    from metaprune.search import methods

    def overshooting_method(context):
        return _result(0.3)

    monkeypatch.setitem(methods.METHODS._entries, "uniform", overshooting_method)
    code, _, err = run_cli(["search", "--method", "uniform", "--speedup", "2", "--model", "mlp", "--image-size", "8",
                            "--epochs", "1", "--no-progress", "--out", str(tmp_path / "search")], capsys)
    assert_one_error_line(code, err, "best plan has a FLOPs ratio of 0.3000")
