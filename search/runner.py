"""``metaprune search`` end to end: dense model (trained once, cached) → search → run-directory files.

Writes ``best_plan.json``, ``trials.csv`` and ``pareto.png`` (score against FLOPs of every
trial, with the budget line) to the run directory; the dense weights are cached there as
``dense.safetensors`` so that a resumed search reuses them. With ``prune`` the best plan
goes through :func:`~metaprune.prune.pipeline.run_prune` as a recipe, which writes the same
files as ``metaprune prune``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from metaprune.data import DataSplits, calibration_batch, load_dataset
from metaprune.errors import ConfigError
from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.prune.pipeline import PruneOptions, PruneResult, run_prune, train_dense
from metaprune.search.methods import SearchContext, SearchResult, check_search_options, get_method
from metaprune.search.objective import SearchSetup, check_objective
from metaprune.search.space import check_min_keep
from metaprune.train import load_state, save_state

DENSE_WEIGHTS = "dense.safetensors"


@dataclass
class SearchOptions:
    """Everything ``metaprune search`` can be told; defaults are the embedded digits task."""

    budget: Budget
    method: str = "optuna"
    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    image_size: int = 16
    trials: int = 50
    objective: str = "distortion"
    sampler: str = "tpe"
    out: str | None = None
    study: str | None = None
    storage: str | None = None
    workers: int = 1
    address: str | None = None
    weights: str | None = None
    seed: int = 0
    epochs: int = 12
    min_keep: float = 0.1
    calibration_size: int = 64
    prune: bool = False
    finetune_epochs: int = 4
    progress: bool = True

    def __post_init__(self) -> None:
        """Check every option before any data is loaded or any model trained."""
        get_method(self.method)
        check_objective(self.objective)
        check_search_options(self.trials, self.workers, self.sampler)
        check_min_keep(self.min_keep)
        if self.epochs < 0 or self.finetune_epochs < 0:
            raise ConfigError("--epochs and --finetune-epochs must be >= 0")

    def prune_options(self, **changes: Any) -> PruneOptions:
        """The matching :class:`PruneOptions` (dense training, and pruning the best plan)."""
        return PruneOptions(budget=self.budget, model=self.model, model_kwargs=self.model_kwargs, data=self.data,
                            data_root=self.data_root, image_size=self.image_size, epochs=self.epochs,
                            finetune_epochs=self.finetune_epochs, min_keep=self.min_keep, seed=self.seed, **changes)


def dense_model(options: SearchOptions, splits: DataSplits, run_dir: Path | None) -> nn.Module:
    """``--weights`` if given, else the cached dense weights of the run directory, else a freshly trained model."""
    cached = run_dir / DENSE_WEIGHTS if run_dir else None
    source = Path(options.weights) if options.weights else cached
    if source is not None and source.is_file():
        model = create_model(options.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
                             image_size=splits.image_size, **options.model_kwargs)
        load_state(source, model)
        return model
    model = train_dense(options.prune_options(), splits, progress=options.progress)
    if cached is not None:
        save_state(cached, model, {"model": options.model, "seed": options.seed})
    return model


def write_trials(result: SearchResult, path: Path, names: list[str]) -> None:
    """One row per trial: number, state, source, score, FLOPs ratio, then the keep ratio of every group."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "source", "score", "flops_ratio", *names])
        for trial in result.trials:
            writer.writerow([trial.number, trial.state, trial.source, trial.score, trial.flops_ratio,
                             *(f"{ratio:.6g}" for ratio in trial.keep_ratios)])


def plot_pareto(result: SearchResult, budget: Budget, objective: str, path: Path) -> None:
    """Score against FLOPs ratio of every complete trial, the Pareto front and the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [trial for trial in result.trials if trial.score is not None]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter([t.flops_ratio for t in done], [t.score for t in done], s=14, alpha=0.6, label="trials")
    axes.plot([t.flops_ratio for t in result.pareto], [t.score for t in result.pareto], "r.-", label="Pareto front")
    axes.axvline(budget.flops_ratio, color="k", linestyle="--", label=f"budget {budget.flops_ratio:.3g}")
    axes.set_xlabel("FLOPs ratio (pruned / dense)")
    axes.set_ylabel("val accuracy after short fine-tune" if objective == "finetune" else "- output distortion")
    axes.set_title(f"{result.method}: {len(done)} trials")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_search(options: SearchOptions, splits: DataSplits | None = None,
               dense: nn.Module | None = None) -> tuple[SearchResult, PruneResult | None]:
    """Search per-group keep ratios under ``options.budget``; optionally prune and fine-tune the best plan."""
    method = get_method(options.method)
    run_dir = Path(options.out) if options.out else None
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
    splits = splits or load_dataset(options.data, root=options.data_root, image_size=options.image_size,
                                    seed=options.seed)
    dense = dense if dense is not None else dense_model(options, splits, run_dir)
    example_input = splits.test[0][0].unsqueeze(0)
    calibration = calibration_batch(splits, n=options.calibration_size, seed=options.seed)
    setup = SearchSetup(dense, example_input, options.budget, calibration, options.objective, splits,
                        options.min_keep, seed=options.seed)
    context = SearchContext.from_setup(setup, trials=options.trials, sampler=options.sampler, seed=options.seed,
                                       run_dir=run_dir, study=options.study, storage=options.storage,
                                       workers=options.workers, address=options.address, progress=options.progress)
    result = method(context)
    if run_dir:
        result.best_plan.save(run_dir / "best_plan.json")
        write_trials(result, run_dir / "trials.csv", context.space.names)
        plot_pareto(result, options.budget, options.objective, run_dir / "pareto.png")
        (run_dir / "search.json").write_text(json.dumps({"method": result.method, "best_score": result.best_score,
                                                         "trials": len(result.trials)}, indent=2) + "\n")
    pruned = None
    if options.prune:
        pruned = run_prune(options.prune_options(recipe=result.best_plan, out=options.out), splits=splits,
                           dense_model=dense, progress=options.progress)
    return result, pruned
