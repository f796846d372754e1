"""Publish a run directory as a zoo entry: copy, checksum, write the card, update the index.

``publish(run_dir, to_dir)`` produces::

    to_dir/index.json                 (created or updated; other entries are kept)
    to_dir/<name>/model.safetensors   ... every run-directory file, copied atomically
    to_dir/<name>/keep_ratios.png     the per-layer chart
    to_dir/<name>/README.md           the model card

(``subfolder="entries"`` puts the files under ``to_dir/entries/<name>/``, the packaged layout.)

The entry's ``base_url`` is ``<name>/`` relative to the index (so the folder can be moved or
served over HTTP as is) unless ``base_url`` names where ``to_dir`` will be hosted.

Publishing refuses a run that would not work for whoever pulls it (:func:`check_run`): the
weights must load strictly into the run's architecture, give finite outputs on its example
input and, for a classifier, reproduce the recorded test accuracy on one test batch. The new
entry is written into a hidden sibling folder and swapped in only when complete; if anything
fails the previous entry and the index are left exactly as they were.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError, ZooError
from metaprune.rundir import ARCHITECTURE_FILE, PLAN_FILE, read_json, temporary_sibling, write_text
from metaprune.version import __version__
from metaprune.zoo.cache import cache_lock
from metaprune.zoo.card import CARD_NAME, CHART_NAME, DEFAULT_LICENSE, card_markdown, render_keep_ratio_chart
from metaprune.zoo.download import copy_verified, sha256_file
from metaprune.zoo.loaders import EntryKind, entry_kind
from metaprune.zoo.names import check_entry_name, check_file_name, safe_join
from metaprune.zoo.registry import Entry, FileRecord, load_index, write_index
from metaprune.zoo.rundir import read_report, run_files
from metaprune.zoo.urls import location_url
from metaprune.zoo.verify import load_test_splits

INDEX_NAME = "index.json"
_SIDE_METRICS = ("test_accuracy", "val_accuracy", "latency_ms", "test_spearman", "dev_spearman", "latency_batch32_ms")
CHECK_BATCH_SIZE = 256
# One test batch is a sample of the test set: its accuracy may stray from the recorded one by sampling
# noise. The check allows that many standard errors plus a fixed margin, so a sound run never fails it
# while weights that are not the run's (random, another run's) do.
CHECK_SIGMAS = 4.0
CHECK_MARGIN = 0.02


def default_entry_name(report: dict[str, Any]) -> str:
    """``<model>-<dataset>-<pattern>-f<percent of dense FLOPs kept>``, e.g. ``resnet20-digits-channel-f50``."""
    pattern = report["pattern"].replace(":", "")
    ratio = report["budget"].get("flops_ratio")
    suffix = f"-f{round(100 * ratio)}" if isinstance(ratio, (int, float)) else ""
    return f"{report['model']}-{report['dataset']}-{pattern}{suffix}"


def _recipe(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    plan_path = run_dir / PLAN_FILE
    if plan_path.is_file():
        plan = read_json(plan_path, error=ZooError)
    else:  # a run without plan.json still records what was kept per layer
        plan = {"pattern": report["pattern"], "layer_keep_ratios": report["layer_keep_ratios"]}
    return {"plan": plan, "command": report["command"]}


def _metrics(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    metrics = {side: _measured(report[side], _SIDE_METRICS) for side in ("dense", "pruned")}
    if "speedup" in report:
        metrics["speedup"] = _measured(report["speedup"], tuple(report["speedup"]))
    return metrics


def _measured(figures: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """The figures among ``keys`` that were measured (a run may leave latency as None)."""
    return {key: float(figures[key]) for key in keys if figures.get(key) is not None}


def _existing_entries(index_path: Path) -> list[Entry]:
    return list(load_index(index_path).entries) if index_path.is_file() else []


def _example_input(run_dir: Path) -> Any:
    """The zero example input recorded in a run's ``architecture.json`` (as :func:`load_run` rebuilds it)."""
    import torch

    from metaprune.inputs import inputs_from_description
    from metaprune.prune.saving import read_architecture

    architecture = read_architecture(run_dir)
    if architecture.get("inputs") is not None:
        return inputs_from_description(architecture["inputs"])
    return torch.zeros(architecture["input_shape"])


def _check_batch_accuracy(run_dir: Path, model: Any, report: dict[str, Any], data_root: str | Path | None) -> None:
    """Refuse a classifier whose accuracy on the first test batch is far from the recorded test accuracy."""
    import torch

    from metaprune.data import make_loaders

    try:
        splits = load_test_splits(run_dir, report, data_root)
    except MetapruneError as error:
        raise ZooError(f"cannot publish {run_dir}: its test set is needed to check the recorded accuracy on one "
                       f"batch ({error}); pass data_root (--data-root)") from error
    inputs, labels = next(iter(make_loaders(splits, batch_size=CHECK_BATCH_SIZE)[2]))
    with torch.no_grad():
        logits = model(inputs)
    if not torch.isfinite(logits).all():
        raise ZooError(f"cannot publish {run_dir}: its model gives NaN or infinite outputs on a test batch")
    measured = (logits.argmax(dim=1) == labels).float().mean().item()
    recorded = float(report["pruned"]["test_accuracy"])
    allowed = CHECK_SIGMAS * math.sqrt(recorded * (1.0 - recorded) / len(labels)) + CHECK_MARGIN
    if abs(measured - recorded) > allowed:
        raise ZooError(f"cannot publish {run_dir}: its weights score {measured:.1%} on a test batch of {len(labels)} "
                       f"but report.json records {recorded:.1%} (allowed ±{allowed:.1%}); the weights are not "
                       "the ones that were measured")


def check_run(run_dir: Path, kind: EntryKind, report: dict[str, Any], data_root: str | Path | None = None) -> None:
    """Refuse a run directory that would not work for whoever pulls it.

    Every kind must load with its own loader (the zoo's bounds and registry-only rule included).
    A pruned model must also give finite outputs on its example input and, when the kind can be
    verified (a classifier), reproduce the recorded test accuracy on one test batch within
    sampling noise (:data:`CHECK_SIGMAS` standard errors + :data:`CHECK_MARGIN`).

    Raises:
        ZooError: one line saying what does not hold.
    """
    import torch

    from metaprune.inputs import output_tensors, run_model

    try:
        loaded = kind.load(run_dir)
    except MetapruneError as error:
        raise ZooError(f"cannot publish {run_dir}: it does not load as a {report['pattern']} entry: {error}") from error
    if not isinstance(loaded, torch.nn.Module) or not (run_dir / ARCHITECTURE_FILE).is_file():
        return
    try:
        with torch.no_grad():
            outputs = output_tensors(run_model(loaded, _example_input(run_dir)))
    except MetapruneError as error:
        raise ZooError(f"cannot publish {run_dir}: {error}") from error
    if not outputs or not all(torch.isfinite(tensor).all() for tensor in outputs if tensor.is_floating_point()):
        raise ZooError(f"cannot publish {run_dir}: its model gives NaN or infinite outputs on its example input; "
                       "the weights are corrupt")
    if kind.verifiable:
        _check_batch_accuracy(run_dir, loaded, report, data_root)


def _write_entry_folder(run_dir: Path, sources: list[Path], report: dict[str, Any], target: Path, name: str,
                        license: str, task: str, *, base_url: str, index_url: str) -> Entry:
    """Copy the run files into ``target``, draw the chart, write the card; returns the validated entry."""
    names = [path.relative_to(run_dir).as_posix() for path in sources]  # e.g. scheduler/scheduler_config.json
    records = [FileRecord(name, *copy_verified(run_dir / name, target / name)) for name in names]
    chart = render_keep_ratio_chart(report["layer_keep_ratios"], target / CHART_NAME)
    records.append(FileRecord(CHART_NAME, sha256_file(chart), chart.stat().st_size))
    # The card lists every file but itself (its own checksum cannot appear inside it).
    card = target / CARD_NAME
    write_text(card, card_markdown(name, report, records, license, CHART_NAME, task))
    records.append(FileRecord(CARD_NAME, sha256_file(card), card.stat().st_size))
    entry = Entry(
        name=name, task=task, architecture=report["model"], dataset=report["dataset"], pattern=report["pattern"],
        flops={side: int(report[side]["flops"]) for side in ("dense", "pruned")},
        params={side: int(report[side]["params"]) for side in ("dense", "pruned")},
        metrics=_metrics(report), files=tuple(records), recipe=_recipe(run_dir, report), license=license,
        metaprune_version=str(report.get("metaprune_version", __version__)), base_url=base_url,
    )
    return Entry.from_dict(entry.to_dict(), index_url)  # the index schema checks it before it is written


def _remove_stale_staging(target: Path) -> None:
    """Remove hidden staging/backup folders of ``target`` left by a publish that was killed (we hold the lock)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(staging: Path, target: Path, index_path: Path, entries: list[Entry]) -> None:
    """Move the complete ``staging`` folder onto ``target`` and write the index; on failure undo both moves."""
    backup = temporary_sibling(target) if target.exists() else None
    if backup is not None:
        os.rename(target, backup)
    try:
        os.rename(staging, target)
        try:
            write_index(index_path, entries)
        except BaseException:
            os.rename(target, staging)  # the new folder goes back to staging, to be removed by the caller
            raise
    except BaseException:
        if backup is not None:
            os.rename(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def publish(run_dir: str | Path, to_dir: str | Path, name: str | None = None, *, license: str = DEFAULT_LICENSE,
            task: str = "image-classification", base_url: str | None = None, subfolder: str = "",
            data_root: str | Path | None = None) -> Entry:
    """Publish ``run_dir`` into the zoo folder ``to_dir`` as entry ``name``; returns the new entry.

    Args:
        run_dir: a run directory written by ``metaprune prune --out``.
        to_dir: the zoo folder (created if needed); ``to_dir/index.json`` is created or updated.
        name: entry name (default: :func:`default_entry_name` of the report).
        license: license of the weights, shown on the card and in the index.
        task: task label used by ``list --task``.
        base_url: where ``to_dir`` will be served (``https://``, ``hf://owner/repo``, ``file://``);
            default: URLs relative to the index.
        subfolder: put the entry in ``to_dir/<subfolder>/<name>/`` (the packaged zoo uses ``entries``).
        data_root: folder of the run's dataset, for datasets that are not embedded; publishing checks
            the recorded accuracy on one test batch (:func:`check_run`).

    Raises:
        ZooError: incomplete run directory, weights that do not load or do not reproduce the recorded
            accuracy, unsafe name, or ``to_dir/<name>`` exists but is not an entry of the index.
            On any failure an existing entry and the index are left untouched.
    """
    run_dir, to_dir = Path(run_dir), Path(to_dir)
    sources = run_files(run_dir)
    report = read_report(run_dir)
    name = check_entry_name(name or default_entry_name(report))
    relative_folder = f"{check_file_name(subfolder)}/{name}" if subfolder else name
    check_run(run_dir, entry_kind(report["pattern"]), report, data_root)
    to_dir.mkdir(parents=True, exist_ok=True)
    index_path = to_dir / INDEX_NAME
    target = safe_join(to_dir, relative_folder)
    entry_base_url = f"{base_url.rstrip('/')}/{relative_folder}/" if base_url else f"{relative_folder}/"
    folder_key = "publish-" + hashlib.sha256(str(to_dir.resolve()).encode()).hexdigest()[:24]
    with cache_lock(folder_key):
        existing = _existing_entries(index_path)
        if (target.exists() or target.is_symlink()) and not any(entry.name == name for entry in existing):
            raise ZooError(f"{target} exists but is not an entry of {index_path}; choose another name")
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(target)
        staging = temporary_sibling(target)
        try:
            entry = _write_entry_folder(run_dir, sources, report, staging, name, license, task,
                                        base_url=entry_base_url, index_url=location_url(index_path))
            _swap_in(staging, target, index_path, [other for other in existing if other.name != name] + [entry])
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # a half-written or rolled-back new entry
    return entry
