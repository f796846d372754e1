"""PruneReport: what a pruning run measured (JSON first, a PNG from it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaprune.errors import WeightsError


@dataclass
class ModelFigures:
    """Measured cost and quality of one model (dense or pruned)."""

    flops: int
    params: int
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    latency_ms: float | None = None
    nonzero_params: int | None = None


@dataclass
class PruneReport:
    """Dense vs pruned figures, per-layer keep ratios and the recipe of one run.

    ``speedup`` holds the FLOPs speed-up (dense / pruned FLOPs; effective FLOPs for mask
    patterns) and the measured CPU latency speed-up.
    """

    model: str
    dataset: str
    pattern: str
    criterion: str
    schedule: str
    budget: dict[str, float]
    dense: ModelFigures
    pruned: ModelFigures
    layer_keep_ratios: dict[str, float]
    wall_time_s: float
    seed: int
    command: str = ""
    metaprune_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> dict[str, float | None]:
        """FLOPs and measured-latency speed-ups of the pruned model over the dense one."""
        latency = None
        if self.dense.latency_ms and self.pruned.latency_ms:
            latency = self.dense.latency_ms / self.pruned.latency_ms
        return {"flops": self.dense.flops / max(1, self.pruned.flops), "latency": latency}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the derived ``speedup`` included."""
        data = asdict(self)
        data["speedup"] = self.speedup
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneReport:
        """Inverse of :meth:`to_dict`."""
        data = {key: value for key, value in data.items() if key != "speedup"}
        data["dense"], data["pruned"] = ModelFigures(**data["dense"]), ModelFigures(**data["pruned"])
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write ``report.json``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PruneReport:
        """Read a ``report.json``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise WeightsError(f"cannot read report {path}: {error}") from error


def plot_report(report: PruneReport, path: str | Path) -> Path:
    """Dense-vs-pruned bars (FLOPs, params, accuracy, latency, relative to dense) and a per-layer keep-ratio chart.

    Layer (or group) names run down the y axis of the right panel at a readable size; the
    figure grows with their number, and legends sit outside the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("FLOPs", "flops"), ("params\n(non-zero)", "nonzero_params"), ("test\naccuracy", "test_accuracy"),
               ("CPU\nlatency", "latency_ms")]
    labels, values = [], []
    for label, key in metrics:
        dense, pruned = getattr(report.dense, key), getattr(report.pruned, key)
        if dense and pruned is not None:
            labels.append(label)
            values.append(pruned / dense)
    layers = list(report.layer_keep_ratios)
    height = max(4.5, 0.2 * len(layers) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 1.4]})
    left.bar(labels, [1.0] * len(labels), color="#cccccc", label="dense (= 1)")
    left.bar(labels, values, width=0.5, color="#3b7dd8", label="pruned")
    for position, value in enumerate(values):
        left.text(position, min(value, 1.0) / 2, f"{value:.2f}", ha="center", va="center", fontsize=10,
                  color="white", fontweight="bold")
    left.set_ylim(0, max(1.05, max(values, default=1.0) * 1.05))
    left.set_ylabel("pruned / dense", fontsize=11)
    left.tick_params(labelsize=10)
    latency = report.speedup["latency"]
    left.set_title(f"{report.model} on {report.dataset}\n{report.speedup['flops']:.2f}x fewer FLOPs"
                   + (f", {latency:.2f}x CPU latency speed-up" if latency else ""), fontsize=11)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=10, frameon=False)
    kind = "layer" if report.pattern in ("unstructured", "n:m") else "group"
    positions = range(len(layers))
    right.barh(positions, [report.layer_keep_ratios[name] for name in layers], color="#d8823b")
    right.set_yticks(positions, layers, fontsize=8 if len(layers) <= 60 else 7)
    right.invert_yaxis()  # first layer on top
    right.set_ylim(len(layers) - 0.5, -0.5)
    right.set_xlim(0, 1.0)
    right.set_xlabel(f"kept fraction of the {kind}'s {'weights' if kind == 'layer' else 'channels'}", fontsize=11)
    right.set_title(f"per-{kind} keep ratio ({report.pattern}, {report.criterion})", fontsize=11)
    right.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
