"""``--storage postgresql://...``: two ``metaprune search`` workers share one study on a real PostgreSQL server.

The server is the PostgreSQL binary shipped in the ``pgserver`` wheel (a dev dependency), started in a
temporary directory; the test is skipped where that package or the ``psycopg`` driver is missing.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

from metaprune.search.optuna_search import BASELINES

pgserver = pytest.importorskip("pgserver")
pytest.importorskip("psycopg")

TRIALS = 40  # enough that the second worker, started a moment later, joins before the study is full


@pytest.fixture
def postgres_url():
    data = tempfile.mkdtemp(prefix="pg", dir="/tmp")  # the server's socket lives here: keep the path short
    server = pgserver.get_server(data, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


def _search(out, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "metaprune.cli", "search", "--budget", "0.5", "--model", "mlp", "--epochs", "1",
               "--out", str(out), "--no-progress", *options]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]


def test_two_workers_share_one_postgres_study(postgres_url, tmp_path):
    _finish(_search(tmp_path / "dense", "--method", "uniform"))  # trains and caches the dense weights once
    weights = str(tmp_path / "dense" / "dense.safetensors")
    shared = ("--method", "optuna", "--trials", str(TRIALS), "--storage", postgres_url, "--study", "shared",
              "--weights", weights)
    workers = [_search(tmp_path / f"worker{index}", *shared) for index in range(2)]
    for worker in workers:
        _finish(worker)

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    # each worker stops once the study has TRIALS complete trials; both may finish one trial in flight
    assert TRIALS <= len(complete) <= TRIALS + 1
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)
    sources = collections.Counter(trial.user_attrs.get("source", "optuna") for trial in complete)
    assert all(sources[name] == 1 for name in BASELINES)  # enqueued once, by the worker that created the study
    assert len({trial.user_attrs["worker"] for trial in complete}) == 2  # both workers ran trials
    assert all(abs(trial.user_attrs["flops_ratio"] - 0.5) <= 0.01 for trial in complete)
    for index in range(2):
        assert (tmp_path / f"worker{index}" / "best_plan.json").is_file()
