"""Publish a run directory as a zoo entry: copy, checksum, write the card, update the index.

``publish(run_dir, to_dir)`` produces::

    to_dir/index.json                 (created or updated; other entries are kept)
    to_dir/<name>/model.safetensors   ... every run-directory file, copied atomically
    to_dir/<name>/keep_ratios.png     the per-layer chart
    to_dir/<name>/README.md           the model card

(``subfolder="entries"`` puts the files under ``to_dir/entries/<name>/``, the packaged layout.)

The entry's ``base_url`` is ``<name>/`` relative to the index (so the folder can be moved or
served over HTTP as is) unless ``base_url`` names where ``to_dir`` will be hosted.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.rundir import PLAN_FILE, read_json, write_text
from metaprune.version import __version__
from metaprune.zoo.cache import cache_lock
from metaprune.zoo.card import CARD_NAME, CHART_NAME, DEFAULT_LICENSE, card_markdown, render_keep_ratio_chart
from metaprune.zoo.download import copy_verified, sha256_file
from metaprune.zoo.names import check_entry_name, check_file_name, safe_join
from metaprune.zoo.registry import Entry, FileRecord, load_index, write_index
from metaprune.zoo.rundir import read_report, run_files
from metaprune.zoo.urls import location_url

INDEX_NAME = "index.json"
_SIDE_METRICS = ("test_accuracy", "val_accuracy", "latency_ms")


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


def _write_entry_folder(run_dir: Path, sources: list[Path], report: dict[str, Any], target: Path, name: str,
                        license: str, task: str, *, base_url: str, index_url: str) -> Entry:
    """Copy the run files, draw the chart, write the card; returns the validated entry describing them."""
    records = [FileRecord(path.name, *copy_verified(path, target / path.name)) for path in sources]
    chart = render_keep_ratio_chart(report["layer_keep_ratios"], target / CHART_NAME)
    records.append(FileRecord(CHART_NAME, sha256_file(chart), chart.stat().st_size))
    # The card lists every file but itself (its own checksum cannot appear inside it).
    card = target / CARD_NAME
    write_text(card, card_markdown(name, report, records, license, CHART_NAME))
    records.append(FileRecord(CARD_NAME, sha256_file(card), card.stat().st_size))
    entry = Entry(
        name=name, task=task, architecture=report["model"], dataset=report["dataset"], pattern=report["pattern"],
        flops={side: int(report[side]["flops"]) for side in ("dense", "pruned")},
        params={side: int(report[side]["params"]) for side in ("dense", "pruned")},
        metrics=_metrics(report), files=tuple(records), recipe=_recipe(run_dir, report), license=license,
        metaprune_version=str(report.get("metaprune_version", __version__)), base_url=base_url,
    )
    return Entry.from_dict(entry.to_dict(), index_url)  # the index schema checks it before it is written


def publish(run_dir: str | Path, to_dir: str | Path, name: str | None = None, *, license: str = DEFAULT_LICENSE,
            task: str = "image-classification", base_url: str | None = None, subfolder: str = "") -> Entry:
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

    Raises:
        ZooError: incomplete run directory, unsafe name, or ``to_dir/<name>`` exists but is not an entry of the index.
    """
    run_dir, to_dir = Path(run_dir), Path(to_dir)
    sources = run_files(run_dir)
    report = read_report(run_dir)
    name = check_entry_name(name or default_entry_name(report))
    to_dir.mkdir(parents=True, exist_ok=True)
    index_path = to_dir / INDEX_NAME
    relative_folder = f"{check_file_name(subfolder)}/{name}" if subfolder else name
    target = safe_join(to_dir, relative_folder)
    entry_base_url = f"{base_url.rstrip('/')}/{relative_folder}/" if base_url else f"{relative_folder}/"
    folder_key = "publish-" + hashlib.sha256(str(to_dir.resolve()).encode()).hexdigest()[:24]
    with cache_lock(folder_key):
        existing = _existing_entries(index_path)
        if target.exists():
            if not any(entry.name == name for entry in existing):
                raise ZooError(f"{target} exists but is not an entry of {index_path}; choose another name")
            shutil.rmtree(target)  # republishing replaces the old files
        try:
            entry = _write_entry_folder(run_dir, sources, report, target, name, license, task,
                                        base_url=entry_base_url, index_url=location_url(index_path))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # a half-written entry folder would block republishing
            raise
        write_index(index_path, [other for other in existing if other.name != name] + [entry])
    return entry
