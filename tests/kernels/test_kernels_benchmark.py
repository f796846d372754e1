"""benchmarks/kernels.py runs its CPU section, writes its JSON and skips the GPU section cleanly."""

import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "kernels.py"


def test_quick_cpu_run_writes_json(tmp_path):
    output = tmp_path / "kernels_cpu.json"
    arguments = ["--quick", "--batches", "1", "--sparsities", "0.9", "--cpu-repeats", "1", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments, "--cpu-output", str(output), "--gpu-output", str(tmp_path / "g.json")],
        capture_output=True, text=True, check=True,
    )
    report = json.loads(output.read_text())
    assert report["threads"] == 1 and report["quick"] is True
    assert [(row["out_features"], row["in_features"]) for row in report["results"]] == [(1024, 1024), (1024, 2752)]
    row = report["results"][0]
    assert row["csr_speedup"] == row["dense_ms"] / row["csr_ms"]
    if not torch.cuda.is_available():
        assert "gpu section skipped" in result.stdout and not (tmp_path / "g.json").exists()
