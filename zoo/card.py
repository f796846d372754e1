"""Markdown model cards generated from ``report.json``, with a per-layer keep-ratio chart.

The card states what was pruned and how (pattern, criterion, schedule, budget), the measured
dense-vs-pruned table, the exact command that reproduces it, the license and every file with
its sha256, so a reader can check what they downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from metaprune.errors import ZooError
from metaprune.rundir import write_with
from metaprune.zoo.cache import pull_entry
from metaprune.zoo.download import sha256_file
from metaprune.zoo.registry import Entry, FileRecord
from metaprune.zoo.rundir import read_report, run_files

CHART_NAME = "keep_ratios.png"
CARD_NAME = "README.md"
DEFAULT_LICENSE = "Apache-2.0"


def render_keep_ratio_chart(layer_keep_ratios: dict[str, float], path: Path) -> Path:
    """Draw one horizontal bar per layer (keep ratio in [0, 1]) and save it as a PNG at ``path``."""
    if not layer_keep_ratios:
        raise ZooError("report has no layer_keep_ratios to chart")
    names = list(layer_keep_ratios)
    # A Figure without pyplot uses the Agg canvas and no global state, so it is safe in threads and headless.
    figure = Figure(figsize=(6.0, 1.0 + 0.28 * len(names)), layout="constrained")
    axes = figure.subplots()
    axes.barh(range(len(names)), [layer_keep_ratios[name] for name in names], color="#4878a8")
    axes.set_yticks(range(len(names)), labels=names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("keep ratio (fraction of channels / weights kept)")
    axes.set_title("Per-layer keep ratio")
    return write_with(path, lambda partial: figure.savefig(partial, format="png", dpi=100))


def _millions(value: float) -> str:
    return f"{value / 1e6:.3f} M"


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f} %"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _metric_rows(dense: dict[str, Any], pruned: dict[str, Any]) -> list[str]:
    formats = (("FLOPs", "flops", _millions), ("parameters", "params", _millions),
               ("test accuracy", "test_accuracy", _percent), ("val accuracy", "val_accuracy", _percent),
               ("latency (ms)", "latency_ms", lambda value: f"{value:.3f}"))
    # A figure the run did not measure (e.g. latency with --no-latency) is None: its row is left out.
    return [f"| {label} | {show(dense[key])} | {show(pruned[key])} |"
            for label, key, show in formats if dense.get(key) is not None and pruned.get(key) is not None]


def card_markdown(name: str, report: dict[str, Any], files: list[FileRecord], license: str,
                  chart_name: str | None) -> str:
    """The card text for a validated ``report`` and the ``files`` that ship with it."""
    ratio = report["budget"].get("flops_ratio")
    budget = f"{ratio:.0%} of the dense FLOPs" if isinstance(ratio, (int, float)) else str(report["budget"])
    speedup = report.get("speedup", {})
    lines = [
        f"# {name}", "",
        f"`{report['model']}` trained on `{report['dataset']}`, pruned with the **{report['pattern']}** pattern "
        f"(criterion `{report.get('criterion', '?')}`, schedule `{report.get('schedule', '?')}`) "
        f"to a budget of {budget}.", "",
        "| metric | dense | pruned |", "|---|---:|---:|",
        *_metric_rows(report["dense"], report["pruned"]), "",
    ]
    if speedup:
        lines += [f"Speed-up: {_times(speedup.get('flops'))} in FLOPs, "
                  f"{_times(speedup.get('latency'))} in measured latency.", ""]
    if chart_name:
        lines += ["## Per-layer keep ratios", "", f"![per-layer keep ratios]({chart_name})", ""]
    lines += ["## Reproduce", "", "```bash", report["command"], "```", "",
              f"Seed {report.get('seed', '?')}, wall time {report.get('wall_time_s', float('nan')):.1f} s, "
              f"metaprune {report.get('metaprune_version', '?')}.", "",
              "## Files", "", "| file | bytes | sha256 |", "|---|---:|---|",
              *(f"| `{record.name}` | {record.size} | `{record.sha256}` |" for record in files), "",
              "## License", "", license, ""]
    return "\n".join(lines)


def make_card(source: str | Path | Entry, *, name: str | None = None, license: str | None = None,
              chart_path: Path | None = None) -> str:
    """Markdown model card of a run directory or a zoo entry, and its keep-ratio chart.

    Args:
        source: a run directory (``report.json`` + weights) or an :class:`Entry` (pulled first,
            offline if cached).
        name: title of the card (default: the entry name, or the run directory's name).
        license: license line (default: the entry's, or Apache-2.0 for a run directory).
        chart_path: where to write the chart PNG.  Default: ``<run_dir>/keep_ratios.png`` for a
            run directory; for an entry, the chart it ships (nothing is rendered).

    Returns:
        The card text, which refers to the chart by file name.
    """
    if isinstance(source, Entry):
        report = read_report(pull_entry(source))
        files = list(source.files)
        title, license_text = name or source.name, license or source.license
        shipped_chart = CHART_NAME if any(record.name == CHART_NAME for record in files) else None
    else:
        run_dir = Path(source)
        paths = run_files(run_dir)
        report = read_report(run_dir)
        files = [FileRecord(path.name, sha256_file(path), path.stat().st_size) for path in paths]
        title, license_text = name or run_dir.resolve().name, license or DEFAULT_LICENSE
        chart_path = chart_path or run_dir / CHART_NAME
        shipped_chart = None
    if chart_path is not None:
        render_keep_ratio_chart(report["layer_keep_ratios"], Path(chart_path))
    chart_name = Path(chart_path).name if chart_path is not None else shipped_chart
    return card_markdown(title, report, files, license_text, chart_name)
