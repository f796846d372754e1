"""The run-directory contract written by ``metaprune prune --out RUN_DIR``, as the zoo reads it.

A run directory holds ``plan.json``, ``report.json``, ``model.safetensors``,
``architecture.json`` and ``report.png``; the zoo needs the report, the weights and the
architecture, and publishes whichever of the others are present. A prompt-routed pipeline
(``metaprune diffusion prune --out``) is a run directory too: its report sits beside the
pipeline's own files (:mod:`metaprune.zoo.diffusion.zoo_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.zoo.registry import PATTERNS

REQUIRED_FILES = ("report.json", "model.safetensors", "architecture.json")
OPTIONAL_FILES = ("plan.json", "report.png")
PIPELINE_FILES = ("report.json", "config.json", "predictor.safetensors", "experts.safetensors", "embeddings.safetensors")
REQUIRED_BY_PATTERN = {"prompt-routed": PIPELINE_FILES}
REPORT_KEYS = ("model", "dataset", "pattern", "budget", "dense", "pruned", "layer_keep_ratios", "command")
SIDE_KEYS = ("flops", "params", "test_accuracy")


def run_files(run_dir: Path) -> list[Path]:
    """The contract files present in ``run_dir``; raises :class:`ZooError` if a required one is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ZooError(f"run directory {run_dir} does not exist; create it with `metaprune prune --out DIR`")
    required = REQUIRED_BY_PATTERN.get(_declared_pattern(run_dir), REQUIRED_FILES)
    missing = [name for name in required if not (run_dir / name).is_file()]
    if missing:
        raise ZooError(f"run directory {run_dir} lacks {missing}; it must hold {list(required)}")
    return [run_dir / name for name in (*required, *OPTIONAL_FILES) if (run_dir / name).is_file()]


def _declared_pattern(run_dir: Path) -> str | None:
    """The pattern named by ``report.json``, or None when it cannot be read (read_report says why later)."""
    try:
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8")).get("pattern")
    except (OSError, ValueError, AttributeError):
        return None


def check_report(report: Any, source: str) -> dict[str, Any]:
    """Validate the keys of a ``report.json`` the zoo relies on; returns it unchanged."""
    if not isinstance(report, dict):
        raise ZooError(f"{source} must hold a JSON object")
    missing = [key for key in REPORT_KEYS if key not in report]
    if missing:
        raise ZooError(f"{source} lacks keys {missing}; write it with metaprune.prune.saving.save_run")
    for side in ("dense", "pruned"):
        absent = [key for key in SIDE_KEYS if key not in report[side]]
        if absent:
            raise ZooError(f"{source}: '{side}' lacks {absent}")
    if report["pattern"] not in PATTERNS:
        raise ZooError(f"{source}: pattern {report['pattern']!r} is not one of {PATTERNS}")
    if not isinstance(report["layer_keep_ratios"], dict):
        raise ZooError(f"{source}: 'layer_keep_ratios' must map layer names to keep ratios")
    return report


def read_report(directory: Path) -> dict[str, Any]:
    """Read and validate ``directory/report.json``."""
    path = Path(directory) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ZooError(f"{path} does not exist; is {directory} a metaprune run directory?") from error
    except json.JSONDecodeError as error:
        raise ZooError(f"{path} is not valid JSON: {error}") from error
    return check_report(report, str(path))
