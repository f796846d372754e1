"""Shared pieces of the benchmark scripts: result files, mean ± std tables, dense-model caching."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` with the machine description included."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def write_result_files(result: dict[str, Any], name: str, table: Callable[[dict[str, Any]], str],
                       plot: Callable[[dict[str, Any], Path], None] | None = None) -> None:
    """``results/<name>.json`` (``result``), ``.md`` (``table(result)``) and, with ``plot``, ``.png``; each file
    written atomically, so a resumable benchmark cut mid-write keeps its last complete results."""
    from metaprune.rundir import write_json as write_json_atomic
    from metaprune.rundir import write_text

    write_json_atomic(RESULTS / f"{name}.json", result)
    write_text(RESULTS / f"{name}.md", table(result) + "\n")
    if plot is not None:
        plot(result, RESULTS / f"{name}.png")


def mean_std(values: Iterable[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of ``values`` times ``scale`` (std 0 for a single value)."""
    values = [value * scale for value in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def dense_digits_model(model: str, seed: int, epochs: int, image_size: int = 16, split_seed: int | None = None):
    """Train the dense digits model a benchmark starts from; returns (model, splits, seconds).

    The data split follows ``split_seed`` (default: ``seed``); fix it when something else,
    such as a metanetwork, was trained on one particular split.
    """
    from metaprune.data import load_digits_splits
    from metaprune.specs import TaskSpec, TrainingSpec
    from metaprune.workflows.prune import train_dense

    splits = load_digits_splits(image_size=image_size, seed=seed if split_seed is None else split_seed)
    start = time.perf_counter()
    dense = train_dense(TaskSpec(model=model, seed=seed), TrainingSpec.dense(epochs), splits, progress=False)
    return dense, splits, time.perf_counter() - start
