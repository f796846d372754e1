"""The prune job behind ``metaprune prune``: data → dense model → prune on schedule → fine-tune → report.

Every criterion, pattern and schedule goes through :func:`run_prune`, so plans, reports and
run directories look the same whatever produced them.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaprune.data import DataSplits, calibration_batch, make_loaders
from metaprune.errors import ConfigError, PruneError
from metaprune.flops import count_flops, count_nonzero_params, count_params, effective_flops, measure_latency
from metaprune.latency.budget import LatencyBudget, check_latency_met, latency_promise, prepare_latency_budget
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import CRITERIA, Criterion, check_criterion_options, get_criterion
from metaprune.prune.plan import PrunePlan
from metaprune.prune.report import ModelFigures, PruneReport, plot_report
from metaprune.prune.saving import save_run
from metaprune.prune.schedules import get_schedule
from metaprune.prune.spec import PruningSpec
from metaprune.rundir import DENSE_WEIGHTS_FILE, REPORT_PLOT_FILE, check_out_dir, staged_files
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.train import evaluate, fit, recalibrate_batchnorm, save_state, seed_everything
from metaprune.version import __version__
from metaprune.workflows.feasibility import check_prune_feasible

log = logging.getLogger(__name__)

#: Lottery-ticket rewinding goes back to the weights after this fraction of dense training
#: (Frankle et al., 2019: rewinding to an early iterate rather than to initialisation).
REWIND_FRACTION = 0.1


def load_plugins() -> None:
    """Import the method packages that register criteria in the engine (the metanetwork's ``meta``)."""
    import metaprune.meta.pruning  # noqa: F401


@dataclass(frozen=True)
class PruneOptions:
    """Everything ``metaprune prune`` can be told, composed of the shared specs; defaults are the digits task.

    Attributes:
        budget: how much to keep (FLOPs); none when ``latency_budget`` says it.
        task: model and data (:class:`~metaprune.specs.TaskSpec`).
        training: dense training (:meth:`TrainingSpec.dense`); skipped when a dense model is given.
        finetune: fine-tuning after pruning (:meth:`TrainingSpec.finetune`).
        pruning: pattern, criterion, ranking, schedule (:class:`~metaprune.prune.spec.PruningSpec`).
        distill: fine-tune with knowledge distillation from the dense model.
        recipe: a saved structured plan to re-apply instead of allocating (its pattern wins).
        latency: measure CPU latency in the report.
        out: run directory to write (none: nothing is written); an existing non-empty one is an error
            unless ``overwrite`` (or ``into_existing``: a search writing its best plan's run beside its study).
        command: the reproducing command recorded in the report.
        extra: free-form figures copied into the report.
        latency_budget: a measured-latency target instead of ``budget``
            (:class:`~metaprune.latency.budget.LatencyBudget`, structured patterns).
    """

    budget: Budget | None
    task: TaskSpec = field(default_factory=TaskSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec.dense)
    finetune: TrainingSpec = field(default_factory=TrainingSpec.finetune)
    pruning: PruningSpec = field(default_factory=PruningSpec)
    distill: bool = False
    recipe: PrunePlan | None = None
    latency: bool = True
    out: str | None = None
    overwrite: bool = False
    into_existing: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    latency_budget: LatencyBudget | None = None

    def __post_init__(self) -> None:
        if (self.budget is None) == (self.latency_budget is None):
            raise ConfigError("give exactly one budget: FLOPs (--budget/--speedup) or latency "
                              "(--latency-speedup/--latency-budget)")
        if self.latency_budget is not None and (self.pruning.pattern not in ("channel", "head") or self.recipe):
            raise ConfigError("latency budgets need a structured pattern (channel, head) and no --plan: masks keep "
                              "zeros that a dense runtime still computes, and a plan brings its own budget")
        if self.out is not None:
            check_out_dir(self.out, overwrite=self.overwrite or self.into_existing)
        if self.training.stage != "dense" or self.finetune.stage != "finetune":
            raise ConfigError("training must be a TrainingSpec.dense(...) and finetune a TrainingSpec.finetune(...)")
        if self.pruning.criterion not in CRITERIA:
            load_plugins()
        check_criterion_options(self.pruning.criterion, self.pruning.criterion_options)
        if self.recipe is not None and self.recipe.pattern not in ("channel", "head"):
            raise ConfigError("re-applying a plan supports structured plans (channel/head)")

    @property
    def pattern(self) -> str:
        """The pattern applied: the recipe's when a plan is re-applied, else the pruning spec's."""
        return self.recipe.pattern if self.recipe is not None else self.pruning.pattern


@dataclass
class PruneResult:
    """The pruned model with its report and plan (and the dense model it came from)."""

    model: nn.Module
    dense_model: nn.Module
    report: PruneReport
    plan: PrunePlan
    history: list[dict[str, Any]]
    run_dir: Path | None


def train_dense(
    task: TaskSpec, training: TrainingSpec, splits: DataSplits, *, progress: bool = True,
    rewind: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Build the model of ``task`` and train it on ``splits`` as ``training`` says (seeded).

    If ``rewind`` is a dict, it is filled with the weights after the first ``REWIND_FRACTION``
    of training: the early iterate that lottery-ticket rewinding returns to.
    """
    seed_everything(task.seed)
    model = task.build_model(splits)
    train_loader, val_loader, _ = make_loaders(splits, batch_size=training.batch_size, seed=task.seed)
    optimizer = training.optimizer_for(task.model)

    def capture(network: nn.Module, step: int, total_steps: int) -> None:
        if rewind is not None and step == max(1, round(REWIND_FRACTION * total_steps)):
            rewind.update({name: value.detach().clone() for name, value in network.state_dict().items()})

    fit(model, train_loader, epochs=training.epochs, lr=training.lr_for(task.model), optimizer=optimizer,
        val_loader=val_loader, warmup_epochs=1 if optimizer == "adamw" else 0, on_step=capture, progress=progress,
        description=f"train {task.model}")
    return model


def measure(model: nn.Module, example_input: torch.Tensor, loaders: tuple, *, masked: bool, latency: bool) -> ModelFigures:
    """FLOPs (effective FLOPs for masked models), parameters, val/test accuracy and CPU latency."""
    flops = effective_flops(model, example_input) if masked else count_flops(model, example_input)
    stats = measure_latency(model, example_input.repeat(32, *[1] * (example_input.dim() - 1))) if latency else None
    return ModelFigures(
        flops=flops, params=count_params(model), nonzero_params=count_nonzero_params(model),
        val_accuracy=evaluate(model, loaders[1]), test_accuracy=evaluate(model, loaders[2]),
        latency_ms=stats.median_ms if stats else None,
    )


def make_pruner(options: PruneOptions, model: nn.Module, example_input: torch.Tensor, criterion: Criterion,
                calibration: tuple[torch.Tensor, torch.Tensor], cost_factory: Any = None) -> tuple[Any, dict[str, Any]]:
    """A StructuredPruner (channel/head), MaskPruner (unstructured/n:m) or PlanPruner (a saved recipe),
    and what the report should say about it (layers an N:M pattern leaves dense)."""
    pruning = options.pruning
    if options.recipe is not None:
        from metaprune.prune.structured import PlanPruner

        return PlanPruner(options.recipe, example_input, criterion, calibration), {}
    if pruning.pattern in ("channel", "head"):
        from metaprune.prune.structured import StructuredPruner

        return StructuredPruner(model, example_input, criterion, ranking=pruning.ranking, min_keep=pruning.min_keep,
                                pattern=pruning.pattern, calibration=calibration, cost_factory=cost_factory,
                                round_to=pruning.round_to), {}
    from metaprune.prune.masks import MaskPruner, n_m_incompatible_layers

    dense_layers = n_m_incompatible_layers(model, pruning.n_m[1]) if pruning.pattern == "n:m" else []
    pruner = MaskPruner(model, example_input, criterion, pattern=pruning.pattern, ranking=pruning.ranking,
                        n_m=pruning.n_m, calibration=calibration, ignored_layers=dense_layers)
    return pruner, ({"dense_layers": dense_layers} if dense_layers else {})


def _layer_keep_ratios(plan: PrunePlan) -> dict[str, float]:
    return {name: round(ratio, 4) for name, ratio in plan.keep_ratios.items()}


def run_prune(
    options: PruneOptions,
    *,
    splits: DataSplits | None = None,
    dense_model: nn.Module | None = None,
    criterion: Criterion | None = None,
    progress: bool = True,
) -> PruneResult:
    """Prune a (trained) model to ``options.budget`` and fine-tune it; write the run directory if ``options.out``.

    ``dense_model`` skips dense training (it is copied, never modified); ``criterion``
    overrides ``options.pruning.criterion``. The criterion's :meth:`~Criterion.prepare` step
    runs on the dense copy first (the metanetwork criterion rewrites it there).
    """
    start = time.perf_counter()
    task, pruning = options.task, options.pruning
    splits = splits or task.load_splits()
    loaders = make_loaders(splits, batch_size=options.finetune.batch_size, seed=task.seed)
    rewind: dict[str, torch.Tensor] = {}
    if dense_model is None and options.training.epochs:  # what the architecture decides fails before training
        check_prune_feasible(options, splits, criterion)
        log.info("training dense %s: %d epochs", task.model, options.training.epochs)
    dense = dense_model if dense_model is not None else train_dense(task, options.training, splits, progress=progress,
                                                                    rewind=rewind)
    dense.eval()
    example_input = splits.test[0][0].unsqueeze(0)
    dense_figures = measure(dense, example_input, loaders, masked=False, latency=options.latency)

    seed_everything(task.seed)
    criterion = criterion or get_criterion(pruning.criterion, seed=task.seed, **pruning.criterion_options)
    model, prepare_extra = criterion.prepare(copy.deepcopy(dense), example_input, loaders)
    calibration = calibration_batch(splits, n=pruning.calibration_size, seed=task.seed)
    latency_setup = None if options.latency_budget is None else prepare_latency_budget(
        options.latency_budget, dense, example_input, pattern=options.pattern, min_keep=pruning.min_keep)
    ratio = latency_setup.ratio if latency_setup is not None else options.budget.flops_ratio
    pruner, pruner_extra = make_pruner(options, model, example_input, criterion, calibration,
                                       latency_setup.cost_factory if latency_setup is not None else None)
    fixed = budget_promise(pruner, ratio).get("n_m_flops_ratio", ratio)
    if latency_setup is None and abs(fixed - ratio) > BUDGET_TOLERANCE * ratio:
        log.warning("%s:%s fixes the FLOPs ratio at %.3f (%.2fx fewer FLOPs) whatever the budget: the asked %.3f "
                    "does not apply", *pruning.n_m, fixed, 1 / fixed, ratio)
    optimizer = options.finetune.optimizer_for(task.model)
    lr = options.finetune.lr_for(task.model)
    teacher = dense if options.distill else None

    before_finetune: dict[str, float] = {}

    def train(target: nn.Module, epochs: int, on_step: Any = None) -> None:
        if pruning.recalibrate_bn:  # removed channels shift every later activation: re-estimate BN statistics
            recalibrate_batchnorm(target, loaders[0])
        if pruning.schedule == "oneshot" and not before_finetune:  # one-shot: the model is pruned, not yet tuned
            before_finetune.update(val_accuracy=evaluate(target, loaders[1]), test_accuracy=evaluate(target, loaders[2]))
        if epochs:
            log.info("fine-tuning: %d epochs", epochs)
        fit(target, loaders[0], epochs=epochs, lr=lr, optimizer=optimizer, teacher=teacher, on_step=on_step,
            progress=progress, description="fine-tune")

    # Without an early iterate (a dense model passed in), lottery rewinds to the trained weights.
    schedule = get_schedule(pruning.schedule, steps=pruning.steps, rewind_state=rewind or None)
    log.info("pruning %s to FLOPs ratio %.3g: %s / %s / %s", task.model, ratio, options.pattern, criterion.name,
             pruning.schedule)
    model = schedule.run(model, pruner, train, ratio, options.finetune.epochs)
    model.eval()
    pruned_figures = measure(model, example_input, loaders, masked=pruner.uses_masks, latency=options.latency)
    # a latency plan records the FLOPs ratio it reached, so `--plan` re-applies it as a FLOPs budget
    plan = pruner.plan(ratio if latency_setup is None else round(pruned_figures.flops / max(1, dense_figures.flops), 6))
    if latency_setup is not None:  # the promise is the measured latency: checked (and recorded) on the final model
        pruner_extra = {**pruner_extra, "latency": check_latency_met(latency_setup, dense, model, example_input)}
    history = list(getattr(pruner, "history", []))
    report = PruneReport(
        model=task.model, dataset=task.data, pattern=options.pattern, criterion=criterion.name,
        schedule=pruning.schedule, budget=budget_promise(pruner, ratio) if latency_setup is None else latency_promise(latency_setup),
        dense=dense_figures,
        pruned=pruned_figures, layer_keep_ratios=_layer_keep_ratios(plan), wall_time_s=time.perf_counter() - start,
        seed=task.seed, command=options.command, metaprune_version=__version__,
        extra={**options.extra, **pruner_extra, **prepare_extra,
               **({"before_finetune": before_finetune} if before_finetune else {})},
    )
    if latency_setup is None:
        check_budget_met(report)
    run_dir = None
    if options.out:
        with staged_files(options.out) as staging:  # a failure keeps the previous files of --out intact
            save_run(staging, model, example_input=example_input, history=history, plan=plan, report=report)
            # the dense model too: `--weights RUN_DIR` starts the next prune from it instead of retraining
            save_state(staging / DENSE_WEIGHTS_FILE, dense, {"model": task.model, "seed": task.seed})
            plot_report(report, staging / REPORT_PLOT_FILE)
        run_dir = Path(options.out)
    log.info("done: FLOPs ratio %.3f, test accuracy %.4f (dense %.4f) in %.0f s%s",
             report.pruned.flops / max(1, report.dense.flops), report.pruned.test_accuracy,
             report.dense.test_accuracy, time.perf_counter() - start, f"; wrote {run_dir}" if run_dir else "")
    return PruneResult(model, dense, report, plan, history, run_dir)


#: Relative FLOPs error within which a pruned model meets its budget (the engine's promise).
BUDGET_TOLERANCE = 0.02


def budget_promise(pruner: Any, flops_ratio: float) -> dict[str, float]:
    """The report's ``budget``: the FLOPs ratio asked for and, for N:M, the ratio ``n/m`` density gives
    (``n_m_flops_ratio``, the promise an N:M run is checked against; the asked ratio does not enter)."""
    promised = getattr(pruner, "promised_flops_ratio", None)
    if getattr(pruner, "n_m", None) is None or promised is None:
        return {"flops_ratio": flops_ratio}
    return {"flops_ratio": flops_ratio, "n_m_flops_ratio": promised(flops_ratio)}


def check_budget_met(report: PruneReport) -> None:
    """PruneError unless the pruned model's FLOPs (effective FLOPs for masks) are within
    :data:`BUDGET_TOLERANCE` of the promise, measured on the final model (after every step
    of the schedule and fine-tuning).

    The promise is ``budget["flops_ratio"]``, except for N:M: ``budget["n_m_flops_ratio"]``, the
    cost of ``n/m`` density in every prunable layer, which a schedule must neither overshoot
    nor undershoot.
    """
    achieved = report.pruned.flops / max(1, report.dense.flops)
    if report.pattern == "n:m":
        if "n_m_flops_ratio" not in report.budget:
            raise PruneError("an n:m report must say the FLOPs ratio its n/m density gives (budget.n_m_flops_ratio)")
        target = report.budget["n_m_flops_ratio"]
        if abs(achieved - target) > BUDGET_TOLERANCE * target:
            raise PruneError(f"the n:m model keeps {achieved:.4f} of the FLOPs where its n/m density promises "
                             f"{target:.4f} (beyond ±{BUDGET_TOLERANCE:.0%}): the {report.schedule} schedule broke "
                             "the N:M pattern; try --schedule oneshot or gradual")
        return
    target = report.budget["flops_ratio"]
    if abs(achieved - target) > BUDGET_TOLERANCE * target:
        raise PruneError(f"the pruned model keeps {achieved:.4f} of the FLOPs for a budget of {target:.4f} "
                         f"(beyond ±{BUDGET_TOLERANCE:.0%}); lower min_keep (--min-keep), use a finer pattern, "
                         "or choose a budget the model can reach")
