"""What a search writes for a person: the Pareto front only where there is one, the trials CSV, the score's meaning."""

from __future__ import annotations

import csv

import optuna
import pytest

from metaprune.prune.budget import Budget
from metaprune.prune.plan import PrunePlan
from metaprune.search.methods import SearchResult, TrialRecord, pareto_front
from metaprune.workflows.search import pareto_steps, plot_pareto, score_meaning, write_trials


def _result(points: list[tuple[float, float]], **kwargs) -> SearchResult:
    trials = [TrialRecord(number, [0.5, 0.5], flops, score) for number, (flops, score) in enumerate(points)]
    return SearchResult("optuna", PrunePlan("channel", {"a": 0.5, "b": 0.5}, flops_ratio=0.5), -1.0, trials, **kwargs)


def test_the_front_is_the_non_dominated_trials_by_flops():
    # (flops ratio, score): lower FLOPs and higher score are better
    front = pareto_front(_result([(0.5, -10), (0.3, -30), (0.4, -35), (0.25, -50), (0.45, -12), (0.3, -31)]).trials)
    assert [(t.flops_ratio, t.score) for t in front] == [(0.25, -50), (0.3, -30), (0.45, -12), (0.5, -10)]


def test_no_front_is_drawn_through_one_point_or_inside_the_budget_band():
    budget = Budget(0.5)
    assert pareto_steps(_result([(0.5, -10), (0.5, -20)]), budget) is None  # one non-dominated point
    assert pareto_steps(_result([(0.495, -12), (0.505, -10)]), budget) is None  # two, but within ±2 % of the budget
    spread = pareto_steps(_result([(0.3, -30), (0.5, -10), (0.4, -40)]), budget)
    assert [t.flops_ratio for t in spread] == [0.3, 0.5]


@pytest.mark.parametrize("points", [[(0.3, -30), (0.5, -10)], [(0.5, -10), (0.501, -12)], [(0.5, -10)]])
def test_the_plot_is_written_for_every_shape_of_search(tmp_path, points):
    path = tmp_path / "pareto.png"
    plot_pareto(_result(points), Budget(0.5), "distortion", path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_the_score_says_what_it_is():
    assert score_meaning("optuna", "distortion").startswith("negative output distortion")
    assert score_meaning("optuna", "finetune") == "val accuracy after a short fine-tune"
    assert score_meaning("dass", "distortion") == "val accuracy of the trained network"


def test_trials_csv_has_our_columns_and_optuna_s_own(tmp_path):
    study = optuna.create_study(direction="maximize")
    for value in (-10.0, -30.0):
        trial = study.ask({"keep:a": optuna.distributions.FloatDistribution(0.1, 1.0)})
        study.tell(trial, value)
    write_trials(_result([(0.5, -10.0), (0.3, -30.0)], study=study), tmp_path / "trials.csv", ["a", "b"])
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [row["number"] for row in rows] == ["0", "1"] and rows[1]["score"] == "-30.0"
    assert {"state", "source", "flops_ratio", "a", "b", "datetime_start", "duration", "params_keep:a"} <= set(rows[0])
