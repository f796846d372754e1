"""``metaprune search`` end to end: dense model (trained once, cached) → search → run-directory files.

Writes ``best_plan.json``, ``trials.csv`` and ``pareto.png`` (score against FLOPs with the
Pareto front when the trials trade one for the other, else score by trial) to the run directory; the dense weights are cached there as
``dense.safetensors`` so that a resumed search reuses them. With ``prune`` the best plan
goes through :func:`~metaprune.workflows.prune.run_prune` as a recipe, which writes the same
files as ``metaprune prune``.

With a latency budget (``latency_budget``: ``--latency-speedup S`` / ``--latency-budget MS``) the
latency table is loaded (or measured) and the target checked against the smallest network before
the dense model trains; the space's cost is then the table's predicted latency, every method that
goes through the space honours it, and the job ends by measuring the best plan's network against
the dense one (:func:`~metaprune.latency.budget.check_latency_met`, ±7%) or fails in one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from metaprune.data import DataSplits, calibration_batch
from metaprune.errors import ConfigError
from metaprune.latency.budget import LatencyBudget, LatencySetup, check_latency_met, prepare_latency_budget
from metaprune.prune.budget import Budget
from metaprune.prune.spec import PruningSpec
from metaprune.rundir import (
    BEST_PLAN_FILE,
    DENSE_WEIGHTS_FILE,
    PARETO_PLOT_FILE,
    SEARCH_SUMMARY_FILE,
    TRIALS_FILE,
    WEIGHTS_FILE,
    check_out_dir,
    write_json,
)
from metaprune.search.methods import (
    FLOPS_ONLY_METHODS,
    SearchContext,
    SearchResult,
    check_latency_method,
    check_search_met,
    check_search_options,
    designs_new_network,
    get_method,
)
from metaprune.search.objective import SearchSetup, check_objective
from metaprune.search.optuna_search import check_storage
from metaprune.search.space import TOLERANCE, check_min_keep
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.train import save_state
from metaprune.workflows.prune import PruneOptions, PruneResult, run_prune, train_dense

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``metaprune search`` can be told, composed of the shared specs; defaults are the digits task.

    ``task``, ``training``, ``finetune`` and ``pruning`` mean what they mean for
    :class:`~metaprune.workflows.prune.PruneOptions` (``pruning.min_keep`` is the per-group floor
    of the search space); the rest are the search's own options (``calibration_size``: images
    that score the search space's points). Exactly one of ``budget`` (FLOPs) and ``latency_budget``
    (measured latency, :class:`~metaprune.latency.budget.LatencyBudget`) is given.
    """

    budget: Budget | None
    method: str = "optuna"
    task: TaskSpec = field(default_factory=TaskSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec.dense)
    finetune: TrainingSpec = field(default_factory=TrainingSpec.finetune)
    pruning: PruningSpec = field(default_factory=PruningSpec)
    trials: int = 50
    objective: str = "distortion"
    sampler: str = "tpe"
    out: str | None = None
    study: str | None = None
    storage: str | None = None
    workers: int = 1
    address: str | None = None
    weights: str | None = None
    calibration_size: int = 64
    prune: bool = False
    progress: bool = True
    overwrite: bool = False
    latency_budget: LatencyBudget | None = None

    def __post_init__(self) -> None:
        """Check every option before any data is loaded or any model trained."""
        if (self.budget is None) == (self.latency_budget is None):
            raise ConfigError("give exactly one budget: FLOPs (--budget/--speedup) or latency "
                              "(--latency-speedup/--latency-budget)")
        if self.latency_budget is not None:
            check_latency_method(self.method)
        if designs_new_network(self.method):
            for flag, given in (("--prune", self.prune), ("--weights", self.weights)):
                if given:
                    raise ConfigError(f"{flag} does not apply to --method {self.method}: it designs a new network "
                                      "(written to the run directory) instead of pruning the dense model")
        if self.pruning.round_to > 1 and (designs_new_network(self.method) or self.method in FLOPS_ONLY_METHODS):
            raise ConfigError(f"--round-to does not apply to --method {self.method}: it sizes the network its own way, "
                              "not through the search space that --round-to snaps to multiples")
        check_objective(self.objective)
        check_search_options(self.trials, self.workers, self.sampler)
        check_min_keep(self.pruning.min_keep)
        if self.out is not None:
            check_search_out(self.out, prune=self.prune, overwrite=self.overwrite)
        if self.storage is not None:
            check_storage(self.storage)

    def prune_options(self, **changes: Any) -> PruneOptions:
        """The matching :class:`PruneOptions` (dense training, and pruning the best plan into the search's folder)."""
        settings = {"budget": self.budget, "task": self.task, "training": self.training, "finetune": self.finetune,
                    "pruning": self.pruning, "into_existing": True}
        return PruneOptions(**{**settings, **changes})


#: Files that mark a folder as a search's: a rerun with the same --out resumes it.
SEARCH_MARKERS = (DENSE_WEIGHTS_FILE, SEARCH_SUMMARY_FILE, "optuna.journal")


def check_search_out(out: str, *, prune: bool, overwrite: bool) -> None:
    """ConfigError for an --out a search must not write into: check_out_dir's rules, where a folder
    holding a search resumes, unless ``--prune`` would replace a pruned run already there."""
    out = check_out_dir(out, overwrite=True)  # empty names, files, unwritable places
    is_search = out.is_dir() and any((out / marker).exists() for marker in SEARCH_MARKERS)
    check_out_dir(out, overwrite=overwrite, resumable=is_search)
    if prune and not overwrite and (out / WEIGHTS_FILE).exists():
        raise ConfigError(f"--out {out} already holds a pruned model; pass --overwrite to replace it with the "
                          "best plan's, or choose another --out")


def dense_model(options: SearchOptions, splits: DataSplits, run_dir: Path | None) -> nn.Module:
    """``--weights`` if given, else the cached dense weights of the run directory, else a freshly trained model.

    The cache records the recipe that made it (model and its options, data, image size, seed,
    epochs, optimiser, learning rate, batch size; not the data's folder) and is reused only
    for the same recipe. Another recipe is refused rather than retrained over: the run
    directory's study was scored on the cached model, and resuming it on another would mix the
    two. A fresh model is cached atomically, so a killed run leaves no torn cache.

    Raises:
        WeightsError: the cache was made by another recipe, records none, or is unreadable.
    """
    import json

    from metaprune.errors import WeightsError
    from metaprune.rundir import atomic_path
    from metaprune.train.checkpoint import read_tensors

    if options.weights:
        return options.task.load_model(Path(options.weights), splits)
    task, training = options.task, options.training
    recipe = json.loads(json.dumps({
        "model": task.model, "model_kwargs": dict(task.model_kwargs), "data": task.data, "image_size": task.image_size,
        "seed": task.seed, "epochs": training.epochs, "optimizer": training.optimizer_for(task.model),
        "lr": training.lr_for(task.model), "batch_size": training.batch_size}, default=str))
    cached = run_dir / DENSE_WEIGHTS_FILE if run_dir else None
    if cached is not None and (cached.exists() or cached.is_symlink()):
        if not cached.is_file():
            raise WeightsError(f"{cached} is not a file; remove it or choose another --out")
        try:
            _, metadata = read_tensors(cached)
        except WeightsError as error:
            raise WeightsError(f"{error}; delete it to retrain the dense model") from error
        stored = metadata.get("recipe") if isinstance(metadata, dict) else None
        changes = ("it records no recipe (an earlier version wrote it)" if not isinstance(stored, dict) else
                   ", ".join(f"{key} {stored.get(key)!r} now {value!r}"
                             for key, value in recipe.items() if stored.get(key) != value))
        if changes:
            raise WeightsError(f"{cached} was trained with another recipe ({changes}); rerun with the same options, "
                               "choose another --out, or delete it to retrain")
        return task.load_model(cached, splits)
    model = train_dense(task, training, splits, progress=options.progress)
    if cached is not None:
        with atomic_path(cached) as partial:
            save_state(partial, model, {"recipe": recipe})
    return model


def score_meaning(method: str, objective: str) -> str:
    """What a search's score is, in words (axis label and the command's summary line)."""
    if designs_new_network(method):
        return "val accuracy of the trained network"
    if objective == "finetune":
        return "val accuracy after a short fine-tune"
    if objective == "bn_accuracy":
        return "val accuracy after BatchNorm re-estimation, no fine-tune"
    return "negative output distortion: -mean squared logit error vs dense, 0 = dense"


def write_trials(result: SearchResult, path: Path, names: list[str], cost_column: str = "flops_ratio") -> None:
    """One row per trial: number, state, source, score, FLOPs ratio (``latency_ratio``, the predicted one, for a
    latency search), the keep ratio of every group, and for an Optuna study its own columns (start, end,
    duration, raw parameters) from ``trials_dataframe()``."""
    import pandas as pd

    frame = pd.DataFrame(
        [[trial.number, trial.state, trial.source, trial.score, trial.flops_ratio, *trial.keep_ratios]
         for trial in result.trials],
        columns=["number", "state", "source", "score", cost_column, *names])
    if result.study is not None:
        optuna_columns = result.study.trials_dataframe(attrs=("number", "datetime_start", "datetime_complete",
                                                               "duration", "params"))
        frame = frame.merge(optuna_columns, on="number", how="left")
    frame.to_csv(path, index=False)


def pareto_steps(result: SearchResult, budget: Budget) -> list | None:
    """The Pareto front worth drawing: at least two non-dominated trials spread beyond the budget's
    ±``TOLERANCE`` band (every trial of a single-objective search sits in that band: no trade-off to show)."""
    front = result.pareto
    if len(front) < 2:
        return None
    spread = max(trial.flops_ratio for trial in front) - min(trial.flops_ratio for trial in front)
    return front if spread > 2 * TOLERANCE * budget.flops_ratio else None


def plot_pareto(result: SearchResult, budget: Budget, objective: str, path: Path, cost: str = "FLOPs") -> None:
    """The search at a glance: score against FLOPs ratio with the Pareto front as steps when the
    trials trade FLOPs for score (NSGA-II); else, every trial sitting at the budget, score by trial
    number with the best so far. Accuracies are drawn in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    done = [trial for trial in result.trials if trial.score is not None and trial.state == "COMPLETE"]
    label = score_meaning(result.method, objective)
    scale = 100.0 if "accuracy" in label else 1.0
    front = pareto_steps(result, budget)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    if front is not None:
        axes.scatter([t.flops_ratio for t in done], [scale * t.score for t in done], s=16, alpha=0.5, label="trials")
        axes.step([t.flops_ratio for t in front], [scale * t.score for t in front], where="post", color="C3",
                  marker="o", markersize=4, label="Pareto front (non-dominated)")
        axes.axvline(budget.flops_ratio, color="k", linestyle="--", linewidth=1, label=f"budget {budget.flops_ratio:.3g}")
        axes.set_xlabel(f"{cost} ratio (pruned / dense {cost})", fontsize=11)
    else:
        order = sorted(done, key=lambda trial: trial.number)
        best, running = [], -float("inf")
        for trial in order:
            running = max(running, trial.score)
            best.append(scale * running)
        axes.scatter([t.number for t in order], [scale * t.score for t in order], s=16, alpha=0.6, label="trials")
        if len(order) > 1:
            axes.step([t.number for t in order], best, where="post", color="C3", label="best so far")
        axes.set_xlabel("trial number", fontsize=11)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(order) == 1:
            axes.set_xticks([order[0].number])
        flops = [t.flops_ratio for t in done]
        if flops:
            shown = f"{min(flops):.3f}" if f"{min(flops):.3f}" == f"{max(flops):.3f}" else f"{min(flops):.3f}-{max(flops):.3f}"
            axes.set_title(f"{'every trial' if len(done) > 1 else 'the trial'} at {cost} ratio {shown} "
                           f"(budget {budget.flops_ratio:.3g}): no trade-off to draw", fontsize=10)
    axes.set_ylabel(label.replace(": ", ":\n") + (" (%)" if scale != 1.0 else ""), fontsize=11)
    axes.tick_params(labelsize=10)
    figure.suptitle(f"{result.method}: {len(done)} complete trial{'s' * (len(done) != 1)}", fontsize=12)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def prepare_latency(options: SearchOptions, splits: DataSplits, dense: nn.Module | None) -> LatencySetup:
    """The latency table and target of a latency-budget search, on the dense architecture (untrained if not yet
    trained: latency does not depend on the weights), so that a bad target fails before any training."""
    task = options.task
    architecture = dense if dense is not None else task.build_model(splits)
    example_input = splits.test[0][0].unsqueeze(0)
    setup = prepare_latency_budget(options.latency_budget, architecture, example_input, min_keep=options.pruning.min_keep)
    log.info("latency budget: %s = %.3g ms of a measured dense %.3g ms (table %s)", options.latency_budget.describe(),
             setup.target_ms, setup.dense_ms, setup.table_path)
    return setup


def check_plan_latency(setup: LatencySetup, dense: nn.Module, plan: Any, example_input: Any) -> dict[str, Any]:
    """Measure the network of ``plan`` against ``dense`` (interleaved, median of 3); PruneError unless within ±7%
    of the latency request. The channels chosen do not change the latency, the widths do: the network is the
    plan applied to a copy of ``dense``."""
    import copy

    from metaprune.prune.criteria import get_criterion
    from metaprune.prune.structured import apply_plan

    pruned = copy.deepcopy(dense).eval()
    apply_plan(pruned, example_input, plan, get_criterion("group_l2"))
    return check_latency_met(setup, dense, pruned.eval(), example_input)


def run_search(options: SearchOptions, splits: DataSplits | None = None,
               dense: nn.Module | None = None) -> tuple[SearchResult, PruneResult | None]:
    """Search per-group keep ratios under ``options.budget`` (or ``options.latency_budget``); optionally prune and
    fine-tune the best plan."""
    method = get_method(options.method)
    task = options.task
    run_dir = Path(options.out) if options.out else None
    splits = splits or task.load_splits()
    latency = prepare_latency(options, splits, dense) if options.latency_budget is not None else None
    budget = options.budget if latency is None else Budget.from_ratio(latency.ratio)
    if designs_new_network(options.method):  # e.g. DASS: a dense model would be trained for nothing
        dense = None
    elif dense is None:
        dense = dense_model(options, splits, run_dir)
    if run_dir:  # only once the dense model exists: a bad model or data leaves no empty run directory
        run_dir.mkdir(parents=True, exist_ok=True)
    example_input = splits.test[0][0].unsqueeze(0)
    calibration = calibration_batch(splits, n=options.calibration_size, seed=task.seed)
    setup = SearchSetup(dense, example_input, budget, calibration, options.objective, splits,
                        options.pruning.min_keep, seed=task.seed, latency_table=latency.table if latency else None,
                        round_to=options.pruning.round_to)
    context = SearchContext.from_setup(setup, trials=options.trials, sampler=options.sampler, seed=task.seed,
                                       run_dir=run_dir, study=options.study, storage=options.storage,
                                       workers=options.workers, address=options.address, progress=options.progress)
    cost = "FLOPs" if latency is None else "predicted latency"
    log.info("searching: %s, %d trials, %s ratio %.3g", options.method, options.trials, cost, budget.flops_ratio)
    result = method(context)
    summary: dict[str, Any] = {"method": result.method, "best_score": result.best_score, "trials": len(result.trials),
                               "round_to": options.pruning.round_to}
    if latency is None:
        check_search_met(result, budget.flops_ratio)
    else:
        space = context.space
        achieved = space.flops_ratio(space.ratios_of_plan(result.best_plan))
        check_search_met(result, budget.flops_ratio, achieved, unit="predicted latency ratio")
        # the promise is the clock: the best plan's network is measured before anything is written
        summary["latency"] = check_plan_latency(latency, dense, result.best_plan, example_input)
        summary["latency"]["predicted_latency_ratio"] = achieved
        summary["latency"]["flops_ratio"] = result.best_plan.flops_ratio
    log.info("done: best score %.4g at FLOPs ratio %.4f%s%s", result.best_score, result.best_plan.flops_ratio or 0.0,
             "" if latency is None else f", measured latency speed-up {summary['latency']['measured_speedup']:.3f}x",
             f"; wrote {run_dir}" if run_dir else "")
    if run_dir:
        result.best_plan.save(run_dir / BEST_PLAN_FILE)
        write_trials(result, run_dir / TRIALS_FILE, context.space.names if context.space else [],
                     "flops_ratio" if latency is None else "latency_ratio")
        plot_pareto(result, budget, options.objective, run_dir / PARETO_PLOT_FILE, cost)
        write_json(run_dir / SEARCH_SUMMARY_FILE, summary)
    result.latency = summary.get("latency")
    pruned = None
    if options.prune:
        changes: dict[str, Any] = {}
        if latency is not None:  # the plan is re-applied as is: its promise is its own FLOPs, its latency was measured
            changes = {"budget": Budget.from_ratio(result.best_plan.flops_ratio),
                       "extra": {"latency": summary["latency"], "latency_request": options.latency_budget.describe()}}
        pruned = run_prune(options.prune_options(recipe=result.best_plan, out=options.out, **changes), splits=splits,
                           dense_model=dense, progress=options.progress)
    return result, pruned
