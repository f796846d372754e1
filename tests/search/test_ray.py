"""Ray Tune search on a local Ray instance: two concurrent trials, every trial on budget, baselines first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from search_helpers import calibration, small_model

from metaprune.prune.budget import Budget
from metaprune.search import TOLERANCE, SearchContext, SearchSetup, get_allocator
from metaprune.search.ray_tune import BASELINES, ray_search

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with two CPUs, shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_runs_two_concurrent_trials_on_budget(local_ray, tmp_path):
    model, example_input = small_model("resnet20")
    setup = SearchSetup(model, example_input, Budget(0.5), calibration())
    context = SearchContext.from_setup(setup, trials=4, workers=2, run_dir=tmp_path, progress=False)
    result = ray_search(context)

    assert ray.is_initialized(), "a Ray instance the caller started is left running"
    assert len(result.trials) == 4 and all(trial.state == "COMPLETE" for trial in result.trials)
    assert all(abs(trial.flops_ratio - 0.5) <= TOLERANCE * 0.5 for trial in result.trials)
    baselines = {tuple(context.space.ratios_of_plan(get_allocator(name).allocate(context.space, setup.calibration)).tolist())
                 for name in BASELINES}
    assert baselines <= {tuple(trial.keep_ratios) for trial in result.trials}
    assert result.best_score == max(trial.score for trial in result.trials)
    assert context.space.ratios_of_plan(result.best_plan).tolist() == max(result.trials, key=lambda t: t.score).keep_ratios
    assert max(running_at_once(tmp_path / "ray")) >= 2
    assert len(worker_processes(tmp_path / "ray")) == 2  # reused: the space is traced once per worker


def last_results(ray_dir: Path) -> list[dict]:
    """The last line of every trial's result.json under Ray's run directory."""
    return [json.loads(path.read_text().splitlines()[-1]) for path in ray_dir.rglob("result.json")]


def worker_processes(ray_dir: Path) -> set[int]:
    return {result["pid"] for result in last_results(ray_dir)}


def running_at_once(ray_dir: Path) -> list[int]:
    """For each trial, how many trials (itself included) ran while it started, from Ray's result.json files.

    Ray stamps results in whole seconds, so a trial's end is taken as its stamp plus one second.
    """
    spans = [(last["timestamp"] - last["time_total_s"], last["timestamp"] + 1) for last in last_results(ray_dir)]
    return [sum(start <= begin < end for start, end in spans) for begin, _ in spans]
