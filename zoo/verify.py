"""Load a zoo entry, and check that it still does what its card says.

:func:`load_entry` pulls an entry and rebuilds it with its kind's loader (:mod:`metaprune.zoo.loaders`).
:func:`verify` pulls an entry, rebuilds the model with :func:`metaprune.prune.saving.load_run`, re-measures the
test accuracy on the dataset named in its report (the split is fixed by the report's seed)
and its FLOPs, and compares both with the card:

    |acc_measured - acc_card| * 100 <= accuracy_points
    |flops_measured - flops_card| <= flops_fraction * flops_card
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.rundir import ARCHITECTURE_FILE
from metaprune.zoo.cache import pull_entry
from metaprune.zoo.loaders import check_registry_model, entry_kind
from metaprune.zoo.registry import load_index
from metaprune.zoo.rundir import read_report
from metaprune.zoo.settings import is_offline

# A deviation of exactly the tolerance passes; float subtraction (0.91 - 0.90) overshoots by ~1e-15.
_ROUNDING = 1e-9
SPARSE_PATTERNS = ("unstructured", "n:m")  # shapes do not shrink: cost is the effective FLOPs


@dataclass(frozen=True)
class Tolerance:
    """How far a re-measurement may stray from the card: accuracy in points, FLOPs as a fraction."""

    accuracy_points: float = 1.0
    flops_fraction: float = 0.01

    def __post_init__(self) -> None:
        for name, value in (("accuracy_points", self.accuracy_points), ("flops_fraction", self.flops_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ZooError(f"tolerance {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class VerifyResult:
    """Claimed (card) and measured accuracy and FLOPs of one entry, and whether they agree."""

    name: str
    card_accuracy: float
    measured_accuracy: float
    card_flops: int
    measured_flops: int
    tolerance: Tolerance

    @property
    def accuracy_ok(self) -> bool:
        """Accuracy within ``tolerance.accuracy_points`` percentage points of the card."""
        return abs(self.measured_accuracy - self.card_accuracy) * 100.0 <= self.tolerance.accuracy_points + _ROUNDING

    @property
    def flops_ok(self) -> bool:
        """FLOPs within ``tolerance.flops_fraction`` of the card (relative)."""
        return abs(self.measured_flops - self.card_flops) <= self.tolerance.flops_fraction * self.card_flops + _ROUNDING

    @property
    def passed(self) -> bool:
        """Both checks hold."""
        return self.accuracy_ok and self.flops_ok

    def summary(self) -> str:
        """Two lines, one per check, for people."""
        mark = {True: "ok", False: "MISMATCH"}
        return (f"{self.name}: test accuracy {100 * self.measured_accuracy:.2f} % vs card "
                f"{100 * self.card_accuracy:.2f} % (±{self.tolerance.accuracy_points} pt) {mark[self.accuracy_ok]}\n"
                f"{self.name}: FLOPs {self.measured_flops:,} vs card {self.card_flops:,} "
                f"(±{100 * self.tolerance.flops_fraction:g} %) {mark[self.flops_ok]}")


def load_entry(name: str, *, offline: bool | None = None, index: str | Path | None = None) -> Any:
    """Pull entry ``name`` (verified) and rebuild it without pickle, with the loader of its kind:
    an ``nn.Module`` for a pruned model, a ``PromptRoutedPipeline`` for a ``prompt-routed`` entry."""
    entry = load_index(index, offline=is_offline(offline)).get(name)
    folder = pull_entry(entry, offline=offline)
    return entry_kind(entry.pattern).load(folder)


def _image_size(directory: Path) -> int:
    path = directory / ARCHITECTURE_FILE
    architecture = check_registry_model(directory)
    size = architecture.model.kwargs.get("image_size") if architecture.model is not None else None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ZooError(f"{path}: field model.kwargs.image_size must be a positive integer, got {size!r}")
    return size


def load_test_splits(directory: Path, report: dict[str, Any], data_root: str | Path | None) -> Any:
    """The dataset of a run's ``report`` at the run's image size, split with the report's seed (as measured)."""
    from metaprune.data import load_dataset

    seed = report.get("seed")
    options: dict[str, Any] = {"image_size": _image_size(directory), "seed": seed if isinstance(seed, int) else 0}
    return load_dataset(report["dataset"], data_root, **options)


def verify(name: str, *, tolerance: Tolerance | None = None, offline: bool | None = None,
           index: str | Path | None = None, data_root: str | Path | None = None,
           batch_size: int = 256) -> VerifyResult:
    """Re-measure test accuracy and FLOPs of entry ``name`` and compare them with its card.

    Args:
        tolerance: allowed deviation (default ±1.0 accuracy point, ±1 % FLOPs).
        data_root: folder of the dataset for datasets that are not embedded (``digits`` is).

    Returns:
        A :class:`VerifyResult`; ``result.passed`` says whether the card holds.
    """
    from metaprune.data import make_loaders
    from metaprune.flops import count_flops, effective_flops
    from metaprune.train.loops import evaluate

    entry = load_index(index, offline=is_offline(offline)).get(name)
    kind = entry_kind(entry.pattern)
    kind.check_verifiable(name)
    directory = pull_entry(entry, offline=offline)
    report = read_report(directory)
    model = kind.load(directory)
    splits = load_test_splits(directory, report, data_root)
    test_loader = make_loaders(splits, batch_size=batch_size)[2]
    example_input = splits.test[0][0].unsqueeze(0)
    flops_of = effective_flops if entry.pattern in SPARSE_PATTERNS else count_flops
    return VerifyResult(
        name=name, card_accuracy=float(entry.metrics["pruned"]["test_accuracy"]),
        measured_accuracy=evaluate(model, test_loader), card_flops=entry.flops["pruned"],
        measured_flops=flops_of(model, example_input), tolerance=tolerance or Tolerance(),
    )
