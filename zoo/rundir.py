"""A run directory (:mod:`metaprune.rundir`) as the zoo reads it: which files it publishes, and the report.

A pruning run (``metaprune prune --out RUN_DIR``) holds ``plan.json``, ``report.json``,
``model.safetensors``, ``architecture.json`` and ``report.png``; the zoo needs the report, the
weights and the architecture, and publishes whichever of the others are present. A prompt-routed
pipeline (``metaprune diffusion prune --out``) is a run directory too: its report
(:mod:`metaprune.diffusion.report`) sits beside the pipeline's own files. The pattern named by
the report picks the entry kind (:mod:`metaprune.zoo.loaders`) and so the files required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.rundir import REPORT_FILE, read_json
from metaprune.zoo.loaders import DEFAULT_KIND, entry_kind, entry_patterns

REPORT_KEYS = ("model", "dataset", "pattern", "budget", "dense", "pruned", "layer_keep_ratios", "command")
SIDE_KEYS = ("flops", "params", "test_accuracy")


def run_files(run_dir: Path) -> list[Path]:
    """The contract files present in ``run_dir``; raises :class:`ZooError` if a required one is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ZooError(f"run directory {run_dir} does not exist; create it with `metaprune prune --out DIR`")
    kind = entry_kind(_declared_pattern(run_dir), default=DEFAULT_KIND)
    missing = [name for name in kind.required_files if not (run_dir / name).is_file()]
    if missing:
        raise ZooError(f"run directory {run_dir} lacks {missing}; it must hold {list(kind.required_files)}")
    return [run_dir / name for name in (*kind.required_files, *kind.optional_files) if (run_dir / name).is_file()]


def _declared_pattern(run_dir: Path) -> str | None:
    """The pattern named by ``report.json``, or None when it cannot be read (read_report says why later)."""
    try:
        return read_json(run_dir / REPORT_FILE, error=ZooError).get("pattern")
    except (ZooError, AttributeError):
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
    if report["pattern"] not in entry_patterns():
        raise ZooError(f"{source}: pattern {report['pattern']!r} is not one of {entry_patterns()}")
    if not isinstance(report["layer_keep_ratios"], dict):
        raise ZooError(f"{source}: 'layer_keep_ratios' must map layer names to keep ratios")
    return report


def read_report(directory: Path) -> dict[str, Any]:
    """Read and validate ``directory/report.json``."""
    path = Path(directory) / REPORT_FILE
    report = read_json(path, error=ZooError, missing=f"{path} does not exist; is {directory} a metaprune run directory?")
    return check_report(report, str(path))
