"""``--address``: a search joins a Ray cluster started separately with ``ray start --head`` (slow: -m slow)."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head():
    """A Ray head node in its own processes, as ``ray start --head`` leaves it on a cluster machine."""
    executable = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if executable is None:
        pytest.skip("the ray command line is not installed")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    subprocess.run([executable, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    f"--temp-dir={temp_dir}"], check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}"
    subprocess.run([executable, "stop", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_cli_search_joins_an_existing_cluster(ray_head, tmp_path):
    # `ray start` enables token authentication by default; the driver opts in through the environment
    env = {**os.environ, "RAY_AUTH_MODE": "token", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "metaprune.cli", "search", "--budget", "0.5", "--model", "mlp", "--method", "ray",
               "--trials", "3", "--workers", "2", "--epochs", "1", "--address", ray_head, "--out", str(tmp_path / "run"),
               "--no-progress"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    with open(tmp_path / "run" / "trials.csv") as table:
        trials = list(csv.DictReader(table))
    assert len(trials) == 3 and all(trial["state"] == "COMPLETE" for trial in trials)
    assert all(abs(float(trial["flops_ratio"]) - 0.5) <= 0.01 for trial in trials)
    assert (tmp_path / "run" / "best_plan.json").is_file()
