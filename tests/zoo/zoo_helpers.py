"""Helpers shared by the zoo tests: valid index entries and index files."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch


def entry_dict(name: str, files: dict[str, bytes], base_url: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid index entry whose files have the given contents."""
    entry: dict[str, Any] = {
        "name": name, "task": "image-classification", "architecture": "mlp", "dataset": "digits",
        "pattern": "channel", "flops": {"dense": 2000, "pruned": 1000}, "params": {"dense": 1010, "pruned": 505},
        "metrics": {"dense": {"test_accuracy": 0.9}, "pruned": {"test_accuracy": 0.88}},
        "files": [{"name": file_name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for file_name, data in files.items()],
        "recipe": {"plan": {"pattern": "channel"}, "command": "metaprune prune --model mlp"},
        "license": "Apache-2.0", "metaprune_version": "0.1.0",
    }
    if base_url is not None:
        entry["base_url"] = base_url
    entry.update(overrides)
    return entry


def write_index(path: Path, *entries: dict[str, Any]) -> Path:
    """Write an index file holding ``entries``; returns its path."""
    path.write_text(json.dumps({"schema_version": 1, "entries": list(entries)}), encoding="utf-8")
    return path


def fake_report(**overrides: Any) -> dict[str, Any]:
    """A report.json in the run-directory contract, with round numbers to check the card against."""
    report: dict[str, Any] = {
        "model": "mlp", "dataset": "digits", "pattern": "channel", "criterion": "l1", "schedule": "one-shot",
        "budget": {"flops_ratio": 0.5},
        "dense": {"flops": 2_000_000, "params": 1_000_000, "test_accuracy": 0.95, "val_accuracy": 0.96, "latency_ms": 2.0},
        "pruned": {"flops": 1_000_000, "params": 500_000, "test_accuracy": 0.9375, "val_accuracy": 0.94, "latency_ms": 1.25},
        "speedup": {"flops": 2.0, "latency": 1.6},
        "layer_keep_ratios": {"layers.0": 0.5, "layers.1": 0.25, "head": 1.0},
        "wall_time_s": 12.5, "seed": 3, "command": "metaprune prune --model mlp --budget 0.5 --seed 3",
        "metaprune_version": "0.1.0",
    }
    report.update(overrides)
    return report


@functools.cache
def trained_mlp_state() -> dict[str, torch.Tensor]:
    """Weights of a small MLP trained on 8x8 digits (split seed 3, as ``fake_report``): ~96 % test accuracy,
    close enough to the report's 93.75 % that publishing accepts it. Trained once per test process (~1 s)."""
    from metaprune.data import load_dataset
    from metaprune.models import create_model

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    splits = load_dataset("digits", image_size=8, seed=3)
    inputs = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    labels = torch.tensor([int(splits.train[i][1]) for i in range(len(splits.train))])
    model = create_model("mlp", image_size=8, hidden_sizes=[32])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    torch.random.set_rng_state(generator_state)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def write_fake_run_dir(run_dir: Path, **report_overrides: Any) -> Path:
    """A run directory with the contract's files: a real (small, trained, dense) MLP saved by ``save_run``
    and a report with round numbers to check the card against."""
    from metaprune.models import create_model
    from metaprune.prune.saving import save_run

    model = create_model("mlp", image_size=8, hidden_sizes=[32])
    model.load_state_dict(trained_mlp_state())
    save_run(run_dir, model, example_input=torch.zeros(1, 1, 8, 8))
    (run_dir / "report.json").write_text(json.dumps(fake_report(**report_overrides)), encoding="utf-8")
    (run_dir / "plan.json").write_text(json.dumps({"pattern": "channel", "keep_ratios": {"layers.0": 0.5}}))
    return run_dir
