"""The prune pipeline behind ``metaprune prune``: data → dense model → prune on schedule → fine-tune → report.

Every criterion, pattern and schedule goes through :func:`run_prune`, so plans, reports and
run directories look the same whatever produced them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaprune.data import DataSplits, calibration_batch, load_dataset, make_loaders
from metaprune.errors import ConfigError
from metaprune.flops import count_flops, count_nonzero_params, count_params, effective_flops, measure_latency
from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import Criterion, get_criterion
from metaprune.prune.plan import PATTERNS, PrunePlan
from metaprune.prune.report import ModelFigures, PruneReport, plot_report
from metaprune.prune.saving import save_run
from metaprune.train import evaluate, fit, recalibrate_batchnorm, seed_everything

#: Lottery-ticket rewinding goes back to the weights after this fraction of dense training
#: (Frankle et al., 2019: rewinding to an early iterate rather than to initialisation).
REWIND_FRACTION = 0.1


@dataclass
class PruneOptions:
    """Everything ``metaprune prune`` can be told; defaults are the embedded digits task."""

    budget: Budget
    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    image_size: int = 16
    pattern: str = "channel"
    criterion: str = "group_l2"
    metanet: str | None = None
    ranking: str = "global"
    schedule: str = "oneshot"
    steps: int = 3
    min_keep: float = 0.1
    n_m: tuple[int, int] = (2, 4)
    epochs: int = 12
    finetune_epochs: int = 4
    lr: float = 0.05
    finetune_lr: float = 0.01
    batch_size: int = 64
    distill: bool = False
    seed: int = 0
    calibration_size: int = 256
    recalibrate_bn: bool = True
    latency: bool = True
    recipe: PrunePlan | None = None
    out: str | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        if self.epochs < 0 or self.finetune_epochs < 0:
            raise ConfigError("epochs and finetune epochs must be >= 0")
        if self.recipe is not None:
            self.pattern = self.recipe.pattern
        if (self.criterion == "meta") != (self.metanet is not None):
            raise ConfigError("--criterion meta and --metanet PATH go together: the metanetwork criterion needs a "
                              "trained metanetwork (python train_meta.py train), and --metanet needs --criterion meta")


@dataclass
class PruneResult:
    """The pruned model with its report and plan (and the dense model it came from)."""

    model: nn.Module
    dense_model: nn.Module
    report: PruneReport
    plan: PrunePlan
    history: list[dict[str, Any]]
    run_dir: Path | None


def _optimizer_for(model_name: str) -> str:
    return "adamw" if model_name.startswith("vit") else "sgd"


def train_dense(
    options: PruneOptions, splits: DataSplits, *, progress: bool = True, rewind: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Build the model named in ``options`` and train it on ``splits`` (seeded).

    If ``rewind`` is a dict, it is filled with the weights after the first ``REWIND_FRACTION``
    of training: the early iterate that lottery-ticket rewinding returns to.
    """
    seed_everything(options.seed)
    model = create_model(
        options.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
        image_size=splits.image_size, **options.model_kwargs,
    )
    train_loader, val_loader, _ = make_loaders(splits, batch_size=options.batch_size, seed=options.seed)
    optimizer = _optimizer_for(options.model)
    lr = options.lr if optimizer == "sgd" else 2e-3
    def capture(network: nn.Module, step: int, total_steps: int) -> None:
        if rewind is not None and step == max(1, round(REWIND_FRACTION * total_steps)):
            rewind.update({name: value.detach().clone() for name, value in network.state_dict().items()})

    fit(model, train_loader, epochs=options.epochs, lr=lr, optimizer=optimizer, val_loader=val_loader,
        warmup_epochs=1 if optimizer == "adamw" else 0, on_step=capture, progress=progress,
        description=f"train {options.model}")
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
                calibration: tuple[torch.Tensor, torch.Tensor]) -> Any:
    """A StructuredPruner (channel/head), MaskPruner (unstructured/n:m) or PlanPruner (a saved recipe)."""
    if options.recipe is not None:
        from metaprune.prune.structured import PlanPruner

        if options.recipe.pattern not in ("channel", "head"):
            raise ConfigError("re-applying a plan supports structured plans (channel/head)")
        return PlanPruner(options.recipe, example_input, criterion, calibration)
    if options.pattern in ("channel", "head"):
        from metaprune.prune.structured import StructuredPruner

        return StructuredPruner(model, example_input, criterion, ranking=options.ranking, min_keep=options.min_keep,
                                pattern=options.pattern, calibration=calibration)
    from metaprune.prune.masks import MaskPruner, n_m_incompatible_layers

    dense_layers = n_m_incompatible_layers(model, options.n_m[1]) if options.pattern == "n:m" else []
    if dense_layers:
        options.extra["dense_layers"] = dense_layers
    return MaskPruner(model, example_input, criterion, pattern=options.pattern, ranking=options.ranking,
                      n_m=options.n_m, calibration=calibration, ignored_layers=dense_layers)


def _layer_keep_ratios(plan: PrunePlan) -> dict[str, float]:
    return {name: round(ratio, 4) for name, ratio in plan.keep_ratios.items()}


def _meta_rewrite(options: PruneOptions, model: nn.Module, example_input: torch.Tensor,
                  loaders: tuple) -> tuple[nn.Module, Criterion, dict[str, Any]]:
    """The metanetwork criterion: rewrite ``model`` (BN re-estimated) and rank by the rewritten group norms."""
    from metaprune.meta.pruning import MetaCriterion, prepare_for_pruning
    from metaprune.meta.training import load_metanet

    start = time.perf_counter()
    rewritten = prepare_for_pruning(load_metanet(options.metanet), model, example_input, loaders[0])
    extra = {"metanet": str(options.metanet), "rewrite_seconds": time.perf_counter() - start,
             "rewritten_val_accuracy": evaluate(rewritten, loaders[1])}
    return rewritten, MetaCriterion(), extra


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
    overrides ``options.criterion`` (e.g. the metanetwork criterion).
    """
    from metaprune import __version__
    from metaprune.prune.schedules import get_schedule

    start = time.perf_counter()
    splits = splits or load_dataset(options.data, root=options.data_root, image_size=options.image_size, seed=options.seed)
    loaders = make_loaders(splits, batch_size=options.batch_size, seed=options.seed)
    rewind: dict[str, torch.Tensor] = {}
    dense = dense_model if dense_model is not None else train_dense(options, splits, progress=progress, rewind=rewind)
    dense.eval()
    example_input = splits.test[0][0].unsqueeze(0)
    dense_figures = measure(dense, example_input, loaders, masked=False, latency=options.latency)

    seed_everything(options.seed)
    model = copy.deepcopy(dense)
    meta_extra: dict[str, Any] = {}
    if options.criterion == "meta" and criterion is None:
        model, criterion, meta_extra = _meta_rewrite(options, model, example_input, loaders)
    criterion = criterion or get_criterion(options.criterion, seed=options.seed)
    calibration = calibration_batch(splits, n=options.calibration_size, seed=options.seed)
    pruner = make_pruner(options, model, example_input, criterion, calibration)
    optimizer = _optimizer_for(options.model)
    lr = options.finetune_lr if optimizer == "sgd" else 5e-4
    teacher = dense if options.distill else None

    before_finetune: dict[str, float] = {}

    def train(target: nn.Module, epochs: int, on_step: Any = None) -> None:
        if options.recalibrate_bn:  # removed channels shift every later activation: re-estimate BN statistics
            recalibrate_batchnorm(target, loaders[0])
        if options.schedule == "oneshot" and not before_finetune:  # one-shot: the model is pruned, not yet tuned
            before_finetune.update(val_accuracy=evaluate(target, loaders[1]), test_accuracy=evaluate(target, loaders[2]))
        fit(target, loaders[0], epochs=epochs, lr=lr, optimizer=optimizer, teacher=teacher, on_step=on_step,
            progress=progress, description="fine-tune")

    # Without an early iterate (a dense model passed in), lottery rewinds to the trained weights.
    schedule = get_schedule(options.schedule, steps=options.steps, rewind_state=rewind or None)
    model = schedule.run(model, pruner, train, options.budget.flops_ratio, options.finetune_epochs)
    model.eval()
    pruned_figures = measure(model, example_input, loaders, masked=pruner.uses_masks, latency=options.latency)
    plan = pruner.plan(options.budget.flops_ratio)
    history = list(getattr(pruner, "history", []))
    report = PruneReport(
        model=options.model, dataset=options.data, pattern=options.pattern, criterion=criterion.name,
        schedule=options.schedule, budget={"flops_ratio": options.budget.flops_ratio}, dense=dense_figures,
        pruned=pruned_figures, layer_keep_ratios=_layer_keep_ratios(plan), wall_time_s=time.perf_counter() - start,
        seed=options.seed, command=options.command, metaprune_version=__version__,
        extra={**options.extra, **meta_extra, **({"before_finetune": before_finetune} if before_finetune else {})},
    )
    run_dir = None
    if options.out:
        run_dir = save_run(options.out, model, example_input=example_input, history=history, plan=plan, report=report)
        plot_report(report, run_dir / "report.png")
    return PruneResult(model, dense, report, plan, history, run_dir)
