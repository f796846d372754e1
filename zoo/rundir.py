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
from metaprune.rundir import REPORT_FILE
from metaprune.zoo.loaders import DEFAULT_KIND, entry_kind, entry_patterns
from metaprune.zoo.schemas import MAX_JSON_BYTES, ReportFile, parse_json_bytes, read_regular_file, validate

REPORT_KEYS = tuple(name for name, field in ReportFile.model_fields.items() if field.is_required())


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
    """The pattern named by ``report.json``; None when there is no report or it names none (read_report says why).

    Raises:
        ZooError: the report is not readable JSON (one line naming it).
    """
    path = run_dir / REPORT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    report = _read_json(path)
    pattern = report.get("pattern") if isinstance(report, dict) else None
    return pattern if isinstance(pattern, str) else None


def _read_json(path: Path) -> Any:
    return parse_json_bytes(read_regular_file(path, MAX_JSON_BYTES, "report"), str(path))


def check_report(report: Any, source: str) -> dict[str, Any]:
    """Validate a ``report.json`` against :class:`~metaprune.zoo.schemas.ReportFile`; returns it unchanged.

    Raises:
        ZooError: one line naming ``source`` and the first field that is missing or wrong.
    """
    if not isinstance(report, dict):
        raise ZooError(f"{source} must hold a JSON object")
    missing = [key for key in REPORT_KEYS if key not in report]
    if missing:
        raise ZooError(f"{source} lacks keys {missing}; write it with metaprune.prune.saving.save_run")
    validate(ReportFile, report, source)
    if report["pattern"] not in entry_patterns():
        raise ZooError(f"{source}: pattern {report['pattern']!r} is not one of {entry_patterns()}")
    if entry_kind(report["pattern"]).verifiable and report["pruned"].get("test_accuracy") is None:
        raise ZooError(f"{source}: missing required field pruned.test_accuracy (a {report['pattern']} run is "
                       "verified by its test accuracy)")
    return report


def read_report(directory: Path) -> dict[str, Any]:
    """Read (bounded, no symlinks followed inside a zoo cache) and validate ``directory/report.json``."""
    path = Path(directory) / REPORT_FILE
    if not path.exists() and not path.is_symlink():
        raise ZooError(f"{path} does not exist; is {directory} a metaprune run directory?")
    return check_report(_read_json(path), str(path))
