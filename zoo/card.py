"""Markdown model cards generated from ``report.json``, with a per-layer keep-ratio chart.

The card opens with the YAML metadata block the Hugging Face Hub reads (``library_name``,
``license``, ``tags``, ``pipeline_tag``, ``model-index`` with the measured metrics), then states
what was pruned and how (pattern, criterion, schedule, budget), the measured dense-vs-pruned
table, why a measured latency may be worse than dense, any notes the report carries
(``card_notes``), the exact command that reproduces it, the license and every file with its
sha256, so a reader can check what they downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
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
#: License ids the Hub knows (lower case); any other license is ``other`` with its name beside it.
HUB_LICENSES = ("apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
                "cc0-1.0", "gpl-3.0", "lgpl-3.0", "mpl-2.0", "openrail", "unlicense")
#: Why a pruned model can measure slower than dense, by pattern (the card says so beside the figure).
SLOWER_BECAUSE = {
    "unstructured": "masked weights are stored dense and run the same dense CPU kernels, so fewer effective FLOPs "
                    "bring no speed-up (the mask is overhead); use a structured pattern or a sparse kernel for speed",
    "n:m": "N:M masks run dense CPU kernels (only GPUs with sparse tensor cores execute 2:4 faster)",
}
SLOWER_BECAUSE.update({f"relative-{pattern}": reason for pattern, reason in list(SLOWER_BECAUSE.items())})
SLOWER_DEFAULT = ("latency was measured once, on a shared CPU; at a few milliseconds per batch, per-layer overhead "
                  "and load from other processes can outweigh the FLOPs saved, so remeasure on a quiet machine before "
                  "reading it as a slow-down of the architecture")


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
               ("STS-B test Spearman x100", "test_spearman", lambda value: f"{value:.2f}"),
               ("STS-B dev Spearman x100", "dev_spearman", lambda value: f"{value:.2f}"),
               ("latency (ms)", "latency_ms", lambda value: f"{value:.3f}"),
               ("latency batch 32 (ms)", "latency_batch32_ms", lambda value: f"{value:.1f}"),
               ("Fréchet distance (judge features)", "fd", lambda value: f"{value:.2f}"))
    # A figure the run did not measure (e.g. latency with --no-latency) is None: its row is left out.
    return [f"| {label} | {show(dense[key])} | {show(pruned[key])} |"
            for label, key, show in formats if dense.get(key) is not None and pruned.get(key) is not None]


def hub_license(license: str) -> dict[str, str]:
    """The Hub's ``license`` field (and ``license_name`` for a license it does not list)."""
    lowered = license.strip().lower()
    if lowered in HUB_LICENSES:
        return {"license": lowered}
    slug = "".join(char if char.isalnum() or char in ".-" else "-" for char in lowered).strip("-") or "custom"
    return {"license": "other", "license_name": slug}


def _hub_metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    pruned = report["pruned"]
    metrics = []
    if pruned.get("test_accuracy") is not None:
        metrics.append({"type": "accuracy", "name": "test accuracy", "value": round(float(pruned["test_accuracy"]), 4)})
    if pruned.get("test_spearman") is not None:
        metrics.append({"type": "spearmanr", "name": "test Spearman x100", "value": round(float(pruned["test_spearman"]), 2)})
    if pruned.get("fd") is not None:
        metrics.append({"type": "frechet_distance", "name": "FD of judge features", "value": round(float(pruned["fd"]), 3)})
    metrics.append({"type": "flops", "name": "FLOPs (pruned)", "value": int(pruned["flops"])})
    return metrics


def card_metadata(name: str, report: dict[str, Any], license: str, task: str) -> dict[str, Any]:
    """The YAML metadata of the card, in the Hub's model-card fields."""
    tags = ["metaprune", "pruning", report["pattern"].replace(":", ""), report["model"], report["dataset"]]
    return {
        "library_name": "metaprune", **hub_license(license), "pipeline_tag": task,
        "tags": list(dict.fromkeys(tags)),
        "model-index": [{"name": name, "results": [{
            "task": {"type": task}, "dataset": {"name": report["dataset"], "type": report["dataset"]},
            "metrics": _hub_metrics(report)}]}],
    }


def latency_note(report: dict[str, Any]) -> str | None:
    """Why the measured latency is worse than dense, when it is (None otherwise)."""
    latency = (report.get("speedup") or {}).get("latency")
    if latency is None or latency >= 1.0:
        return None
    reason = SLOWER_BECAUSE.get(report["pattern"], SLOWER_DEFAULT)
    return f"Measured latency {latency:.2f}x (slower than dense): {reason}."


def card_markdown(name: str, report: dict[str, Any], files: list[FileRecord], license: str,
                  chart_name: str | None, task: str = "image-classification") -> str:
    """The card text for a validated ``report`` and the ``files`` that ship with it (``task``: the Hub's pipeline tag)."""
    ratio = report["budget"].get("flops_ratio")
    budget = f"{ratio:.0%} of the dense FLOPs" if isinstance(ratio, (int, float)) else str(report["budget"])
    speedup = report.get("speedup", {})
    header = yaml.safe_dump(card_metadata(name, report, license, task), sort_keys=False, allow_unicode=True)
    # a pretrained sentence encoder is pruned without retraining and only scored on its data set
    source = "measured on" if report["pruned"].get("test_spearman") is not None else "trained on"
    lines = [
        "---", header.rstrip("\n"), "---", "",
        f"# {name}", "",
        f"`{report['model']}` {source} `{report['dataset']}`, pruned with the **{report['pattern']}** pattern "
        f"(criterion `{report.get('criterion', '?')}`, schedule `{report.get('schedule', '?')}`) "
        f"to a budget of {budget}.", "",
        "| metric | dense | pruned |", "|---|---:|---:|",
        *_metric_rows(report["dense"], report["pruned"]), "",
    ]
    if speedup:
        lines += [f"Speed-up: {_times(speedup.get('flops'))} in FLOPs, "
                  f"{_times(speedup.get('latency'))} in measured latency.", ""]
        if note := latency_note(report):
            lines += [note, ""]
    notes = [str(note) for note in report.get("card_notes", []) if isinstance(note, str)]
    if notes:
        lines += ["## Notes", "", *(f"* {note}" for note in notes), ""]
    if chart_name:
        lines += ["## Per-layer keep ratios", "", f"![per-layer keep ratios]({chart_name})", ""]
    lines += ["## Reproduce", "", "```bash", report["command"], "```", "",
              f"Seed {report.get('seed', '?')}, wall time {report.get('wall_time_s', float('nan')):.1f} s, "
              f"metaprune {report.get('metaprune_version', '?')}.", "",
              "## Files", "", "| file | bytes | sha256 |", "|---|---:|---|",
              *(f"| `{record.name}` | {record.size} | `{record.sha256}` |" for record in files), "",
              "## License", "", license, ""]
    return "\n".join(lines)


def read_card_metadata(text: str) -> dict[str, Any]:
    """The YAML metadata block at the top of a card (``{}`` if it has none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    if end < 0:
        raise ZooError("the card's YAML metadata block is not closed by a '---' line")
    data = yaml.safe_load(text[4:end])
    if not isinstance(data, dict):
        raise ZooError("the card's YAML metadata block is not a mapping")
    return data


def make_card(source: str | Path | Entry, *, name: str | None = None, license: str | None = None,
              chart_path: Path | None = None, task: str | None = None) -> str:
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
        files = [FileRecord(path.relative_to(run_dir).as_posix(), sha256_file(path), path.stat().st_size)
                 for path in paths]
        title, license_text = name or run_dir.resolve().name, license or DEFAULT_LICENSE
        chart_path = chart_path or run_dir / CHART_NAME
        shipped_chart = None
    if chart_path is not None:
        render_keep_ratio_chart(report["layer_keep_ratios"], Path(chart_path))
    chart_name = Path(chart_path).name if chart_path is not None else shipped_chart
    entry_task = source.task if isinstance(source, Entry) else "image-classification"
    return card_markdown(title, report, files, license_text, chart_name, task or entry_task)
