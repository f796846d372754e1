"""``metaprune search`` end to end on digits, and one clear error line for every bad option."""

from __future__ import annotations

import csv
import json

import pytest
from test_cli import _assert_one_error_line, run_cli  # tests/test_cli.py: the CLI's shared helpers

from metaprune.prune.plan import PrunePlan

TINY = ["--model", "resnet20", "--width", "0.5", "--image-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory):
    """One `metaprune search --method uniform` run (dense ResNet-20 trained for one epoch, cached)."""
    out = tmp_path_factory.mktemp("search") / "uniform"
    from metaprune.cli import main

    main(["search", "--budget", "0.5", "--method", "uniform", "--epochs", "1", "--out", str(out), *TINY])
    return out


def test_search_writes_the_plan_the_trials_and_the_plot(uniform_run):
    for name in ("best_plan.json", "trials.csv", "pareto.png", "search.json", "dense.safetensors"):
        assert (uniform_run / name).is_file(), name
    plan = PrunePlan.load(uniform_run / "best_plan.json")
    assert plan.pattern == "channel" and plan.flops_ratio == pytest.approx(0.5, rel=0.02)
    rows = list(csv.DictReader((uniform_run / "trials.csv").open()))
    assert len(rows) == 1 and rows[0]["source"] == "uniform" and rows[0]["state"] == "COMPLETE"
    assert {name: float(rows[0][name]) for name in plan.keep_ratios} == pytest.approx(plan.keep_ratios)
    assert (uniform_run / "pareto.png").read_bytes().startswith(b"\x89PNG")


def test_prune_fine_tunes_the_best_plan_like_metaprune_prune(uniform_run, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(["search", "--speedup", "2", "--method", "erk", "--prune", "--finetune-epochs", "1",
                                 "--weights", str(uniform_run / "dense.safetensors"), "--out", str(out), *TINY], capsys)
    assert code == 0, err
    for name in ("best_plan.json", "trials.csv", "pareto.png", "plan.json", "report.json", "model.safetensors",
                 "report.png", "architecture.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["speedup"]["flops"] == pytest.approx(2.0, rel=0.02)
    best = PrunePlan.load(out / "best_plan.json")
    assert report["layer_keep_ratios"] == {name: round(ratio, 4) for name, ratio in best.keep_ratios.items()}
    assert "pruned: test accuracy" in stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "1.5"], "0 < ratio <= 1"),
        (["--budget", "0"], "0 < ratio <= 1"),
        (["--speedup", "0.5"], "speed-up must be >= 1"),
        (["--budget", "0.5", "--speedup", "2"], "exactly one"),
        ([], "exactly one"),
        (["--budget", "0.5", "--method", "amc"], "unknown search method 'amc'"),
        (["--budget", "0.5", "--objective", "loss"], "unknown objective 'loss'"),
        (["--budget", "0.5", "--method", "optuna", "--sampler", "random"], "unknown sampler 'random'"),
        (["--budget", "0.5", "--trials", "0"], "--trials must be >= 1"),
        (["--budget", "0.5", "--workers", "0"], "--workers must be >= 1"),
        (["--budget", "0.5", "--trials", "100001"], "--trials must be <= 100000"),
        (["--budget", "0.5", "--workers", "100000"], "--workers must be <= 1024"),
        (["--budget", "0.5", "--min-keep", "0"], "--min-keep must be in (0, 1]"),
        (["--budget", "0.005", "--method", "uniform", "--epochs", "0"], "raise the budget or lower --min-keep"),
    ],
)
def test_bad_options_get_one_clear_error_line(args, expected, tmp_path, capsys):
    code, _, err = run_cli(["search", *args, "--out", str(tmp_path / "run"), *TINY], capsys)
    _assert_one_error_line(code, err, expected)
    assert "Traceback" not in err


def test_a_storage_that_is_a_directory_is_one_error_line(tmp_path, capsys):
    code, _, err = run_cli(["search", "--budget", "0.5", "--method", "optuna", "--trials", "2", "--epochs", "0",
                            "--storage", str(tmp_path), "--out", str(tmp_path / "run"), *TINY], capsys)
    _assert_one_error_line(code, err, f"--storage {tmp_path} is a directory")
    assert "Traceback" not in err
