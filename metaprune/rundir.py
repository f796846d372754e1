"""The run directory: the names of its files, atomic writes and checked reads.

Every job writes its results under one folder (``runs/<name>/``)::

    plan.json           the plan applied (PLAN_FILE)
    report.json         the measured report (REPORT_FILE)
    report.png          its plot (REPORT_PLOT_FILE)
    model.safetensors   the pruned weights (WEIGHTS_FILE)
    architecture.json   how to rebuild the model around them (ARCHITECTURE_FILE)
    run.log             what the command said while it ran, appended per run (RUN_LOG_FILE)

A search adds ``best_plan.json``, ``trials.csv``, ``pareto.png``, ``search.json`` and
``dense.safetensors``; a prompt-routed diffusion pipeline holds ``config.json`` and its
``predictor``/``experts``/``embeddings`` safetensors beside its ``report.json``, and the
diffusion teacher it was pruned from ``unet.json`` and ``unet*.safetensors``.

Writes go to a temporary sibling, then :func:`os.replace` it over the target, so a reader (or
an interrupted job) never sees half a file. Reads raise one-line :class:`MetapruneError`\\ s.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaprune.errors import ConfigError, MetapruneError, WeightsError

if TYPE_CHECKING:  # torch loads with the first tensor written, not with the file names (the CLI starts fast)
    import torch

# A pruning run (`metaprune prune --out`).
PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
REPORT_PLOT_FILE = "report.png"
WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE_FILE = "architecture.json"
# Every run directory a command writes (`metaprune.logs.run_log`); a folder holding only this is not a run.
RUN_LOG_FILE = "run.log"

# A search run (`metaprune search --out`).
BEST_PLAN_FILE = "best_plan.json"
TRIALS_FILE = "trials.csv"
PARETO_PLOT_FILE = "pareto.png"
SEARCH_SUMMARY_FILE = "search.json"
DENSE_WEIGHTS_FILE = "dense.safetensors"

# A prompt-routed diffusion pipeline (`metaprune diffusion prune --out`).
PIPELINE_CONFIG_FILE = "config.json"
PREDICTOR_WEIGHTS_FILE = "predictor.safetensors"
EXPERT_WEIGHTS_FILE = "experts.safetensors"
EMBEDDINGS_FILE = "embeddings.safetensors"
PIPELINE_FILES = (PIPELINE_CONFIG_FILE, PREDICTOR_WEIGHTS_FILE, EXPERT_WEIGHTS_FILE, EMBEDDINGS_FILE)
# ... and, in diffusers' folder conventions, its index and the configs diffusers itself reads (h3).
PIPELINE_DIFFUSERS_FILES = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json")

# A diffusion teacher (`metaprune diffusion teacher --out`): EMA weights to use, and what resuming needs.
TEACHER_CONFIG_FILE = "unet.json"
TEACHER_WEIGHTS_FILE = "unet.safetensors"
TEACHER_TRAINING_WEIGHTS_FILE = "unet.train.safetensors"
TEACHER_OPTIMIZER_FILE = "unet.optimizer.safetensors"


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` (same filesystem, so ``os.replace`` onto ``path`` is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``, on failure it is removed.

    The parent folder is created. Unlike :mod:`tempfile`'s 0600 files the result gets the
    usual umask permissions, so a served zoo or a shared run stays readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)`` and move the result onto ``path`` atomically; returns ``path``.

    For writers that take a file name (``figure.savefig``, a CSV writer, ``yaml`` dumps).
    """
    with atomic_path(path) as partial:
        write(partial)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_with(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (``indent`` spaces, trailing newline) to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
                     ) -> Path:
    """Write ``tensors`` (made contiguous) to a safetensors file at ``path`` atomically; returns ``path``."""
    from safetensors.torch import save_file

    contiguous = {key: value.contiguous() for key, value in tensors.items()}
    return write_with(path, lambda partial: save_file(contiguous, str(partial), metadata=metadata))


def read_json(path: str | Path, *, error: type[MetapruneError] = WeightsError, missing: str | None = None) -> Any:
    """The parsed JSON of ``path``.

    Args:
        error: the :class:`MetapruneError` subclass to raise (the caller's domain: weights, zoo, ...).
        missing: the message when ``path`` is not a file (default ``"<path> does not exist"``).

    Raises:
        ``error``: the file is missing or unreadable, or is not valid JSON (one line each).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as cause:
        raise error(missing or f"{path} does not exist") from cause
    except OSError as cause:
        raise error(f"cannot read {path}: {cause}") from cause
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as cause:
        raise error(f"{path} is not valid JSON: {cause}") from cause


def check_out_dir(out: str | Path | None, *, overwrite: bool = False, resumable: bool = False) -> Path:
    """Check a run directory before any work is done, so a job never fails after training for a path.

    Refuses an empty name, a path that is a file or lies under a file, a folder that cannot be
    created or written, and an existing non-empty folder unless ``overwrite`` (or ``resumable``:
    a search resumes the study in its folder). A folder holding only ``run.log`` (a run that failed)
    counts as empty. Creates nothing.

    Raises:
        ConfigError: one line naming the path and what to do.
    """
    if out is None or not str(out).strip():
        raise ConfigError("--out needs a folder name (an empty one would write nowhere)")
    path = Path(out)
    if len(path.name.encode()) > 255:
        raise ConfigError(f"--out {str(path)[:60]}...: the folder name is longer than 255 bytes")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder; choose another --out")
    if path.is_dir() and any(item.name != RUN_LOG_FILE for item in path.iterdir()) and not (overwrite or resumable):
        raise ConfigError(f"--out {path} already holds a run; pass --overwrite to replace it or choose another --out")
    check_creatable(path, f"--out {path}")
    return path


def check_creatable(path: Path, label: str, error: type[MetapruneError] = ConfigError) -> None:
    """``error`` unless ``path`` could be created: its nearest existing ancestor is a writable folder.

    ``label`` names the path in the message (e.g. ``"--out runs/x"``); nothing is created.
    """
    ancestor = path.parent if path.parent != path else path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{label} lies under {ancestor}, which is not a directory; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise error(f"{label}: {ancestor} is not writable; choose another path")


def check_out_file(path: str | Path) -> Path:
    """``path`` as a file that can be written (its folder may be created): ConfigError naming it otherwise."""
    if not str(path).strip():
        raise ConfigError("--out needs a file name (an empty one would write nowhere)")
    target = Path(path)
    if len(target.name.encode()) > 255:
        raise ConfigError(f"--out {str(target)[:60]}...: the file name is longer than 255 bytes")
    if target.is_dir():
        raise ConfigError(f"--out {target} is a folder; give a file name such as {target / 'grid.png'}")
    check_creatable(target, f"--out {target}")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"--out {target} is not writable; choose another --out")
    return target


@contextmanager
def staged_files(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``out`` to write a run's files into; on success each
    file is moved into ``out`` (replacing one of the same name), on failure nothing in ``out`` changes.

    Writing is where a full disk or a crash strikes; the moves that follow are renames on one
    filesystem. Files of ``out`` that the run does not write (a search's study) are kept.
    """
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(out)
    staging.mkdir()
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
