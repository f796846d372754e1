"""The one-call Python front door: :func:`prune_model` prunes any ``nn.Module`` to a budget.

It mirrors ``metaprune prune`` without the task around it: the caller brings the trained
model, example inputs and (optionally) training data; metaprune scores, removes or masks,
re-estimates BatchNorm, fine-tunes, checks the budget and reports::

    import metaprune
    pruned, report = metaprune.prune_model(model, torch.randn(1, 3, 32, 32), speedup=2,
                                           train_data=train_loader, finetune_epochs=2)
    report.speedup["flops"]   # 2.0 (within 2 %)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from metaprune.errors import ConfigError
from metaprune.flops import count_flops, count_nonzero_params, count_params, effective_flops
from metaprune.inputs import ExampleInputs, check_example_inputs
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import CRITERIA, check_criterion_options, get_criterion
from metaprune.prune.report import ModelFigures, PruneReport
from metaprune.prune.spec import PruningSpec
from metaprune.specs import TrainingSpec
from metaprune.train import evaluate, fit, recalibrate_batchnorm, seed_everything
from metaprune.version import __version__
from metaprune.workflows.prune import (
    PruneOptions,
    budget_promise,
    check_budget_met,
    load_plugins,
    make_pruner,
)


def _loader(data: DataLoader | Dataset | None, batch_size: int, seed: int) -> DataLoader | None:
    if data is None or isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise ConfigError(f"train_data / val_data must be a DataLoader or a Dataset, got {type(data).__name__}")
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _calibration(loader: Iterable | None, size: int) -> tuple[Any, Any] | None:
    """Up to ``size`` (inputs, targets) from the first batches of ``loader`` (the first batch when
    inputs are not plain tensors, e.g. dicts of token ids)."""
    if loader is None:
        return None
    inputs, targets, count = [], [], 0
    for batch_inputs, batch_targets in loader:
        if not isinstance(batch_inputs, torch.Tensor):
            return batch_inputs, batch_targets
        inputs.append(batch_inputs)
        targets.append(batch_targets)
        count += len(batch_inputs)
        if count >= size:
            break
    return torch.cat(inputs)[:size], torch.cat(targets)[:size]


def _figures(model: nn.Module, example_inputs: ExampleInputs, val_loader: DataLoader | None, masked: bool) -> ModelFigures:
    flops = effective_flops(model, example_inputs) if masked else count_flops(model, example_inputs)
    accuracy = evaluate(model, val_loader) if val_loader is not None else None
    return ModelFigures(flops=flops, params=count_params(model), nonzero_params=count_nonzero_params(model),
                        val_accuracy=accuracy)


def prune_model(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    budget: float | Budget | None = None,
    speedup: float | None = None,
    pattern: str = "channel",
    criterion: str = "group_l2",
    criterion_options: Mapping[str, Any] | None = None,
    ranking: str = "global",
    min_keep: float = 0.1,
    n_m: tuple[int, int] = (2, 4),
    train_data: DataLoader | Dataset | None = None,
    val_data: DataLoader | Dataset | None = None,
    finetune_epochs: int = 0,
    lr: float | None = None,
    optimizer: str = "sgd",
    batch_size: int = 64,
    calibration: tuple[Any, Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``model`` to a FLOPs budget and return it with its report (``model`` is untouched).

    Args:
        model: a trained classifier (any architecture torch-pruning can trace).
        example_inputs: a batch of inputs the model accepts: a tensor, a tuple of positional inputs
            or a dict of keyword inputs (e.g. a tokenizer's ``input_ids`` and ``attention_mask``).
        budget: FLOPs ratio to keep (``0 < r <= 1``) or a :class:`Budget`; or give ``speedup``.
        pattern, criterion, criterion_options, ranking, min_keep, n_m: as in ``metaprune prune``
            (:class:`~metaprune.prune.spec.PruningSpec`).
        train_data: DataLoader or Dataset of ``(inputs, targets)``: calibration batch for gradient
            criteria, BatchNorm re-estimation and fine-tuning.
        val_data: DataLoader or Dataset to report accuracy before and after.
        finetune_epochs: epochs of fine-tuning on ``train_data`` (0: none).
        lr, optimizer, batch_size: fine-tuning settings (``lr=None``: the fine-tune default).
        calibration: ``(inputs, targets)`` for gradient criteria when there is no ``train_data``
            (default: the first batches of ``train_data``).
        loss_fn: ``loss_fn(output, targets) -> scalar`` for gradient criteria; default: cross-entropy
            of a logits tensor (pass one for models that return dicts or ``ModelOutput``).
        seed: seed of scoring ties, random criteria and fine-tuning.

    Returns:
        ``(pruned_model, report)``; the report's ``speedup["flops"]`` is the achieved reduction.

    Raises:
        ConfigError: bad options (unknown pattern or criterion, fine-tuning without data).
        PruneError: the result misses the budget by more than 2 % (for ``n:m``: its fixed density).
    """
    start = time.perf_counter()
    target = budget if isinstance(budget, Budget) else Budget.from_options(budget, speedup)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_example_inputs(example_inputs)
    if finetune_epochs and train_data is None:
        raise ConfigError("finetune_epochs > 0 needs train_data")
    pruning = PruningSpec(pattern=pattern, criterion=criterion, criterion_options=criterion_options or {},
                          ranking=ranking, min_keep=min_keep, n_m=n_m)
    finetune = TrainingSpec.finetune(finetune_epochs, lr=lr, optimizer=optimizer, batch_size=batch_size)
    if criterion not in CRITERIA:
        load_plugins()
    check_criterion_options(criterion, pruning.criterion_options)
    train_loader = _loader(train_data, batch_size, seed)
    val_loader = _loader(val_data, 256, seed)

    seed_everything(seed)
    dense = copy.deepcopy(model).eval()
    dense_figures = _figures(dense, example_inputs, val_loader, masked=False)
    scorer = get_criterion(criterion, seed=seed, **pruning.criterion_options)
    pruned, prepare_extra = scorer.prepare(copy.deepcopy(dense), example_inputs, (train_loader, val_loader, val_loader))
    batch = calibration if calibration is not None else _calibration(train_loader, pruning.calibration_size)
    if batch is not None and loss_fn is not None:
        batch = (*batch[:2], loss_fn)
    pruner, pruner_extra = make_pruner(PruneOptions(target, pruning=pruning, latency=False), pruned, example_inputs, scorer,
                                       batch)
    pruner.prune_to(pruned, target.flops_ratio)
    if train_loader is not None:
        recalibrate_batchnorm(pruned, train_loader)
        if finetune_epochs:
            fit(pruned, train_loader, epochs=finetune_epochs, lr=finetune.lr_for(type(model).__name__), optimizer=optimizer,
                progress=False, description="fine-tune")
    pruned.eval()
    pruned_figures = _figures(pruned, example_inputs, val_loader, masked=pruner.uses_masks)
    plan = pruner.plan(target.flops_ratio)
    report = PruneReport(
        model=type(model).__name__, dataset="user data", pattern=pattern, criterion=scorer.name, schedule="oneshot",
        budget=budget_promise(pruner, target.flops_ratio), dense=dense_figures, pruned=pruned_figures,
        layer_keep_ratios={name: round(ratio, 4) for name, ratio in plan.keep_ratios.items()},
        wall_time_s=time.perf_counter() - start, seed=seed, command="metaprune.prune_model",
        metaprune_version=__version__, extra={**pruner_extra, **prepare_extra},
    )
    check_budget_met(report)
    return pruned, report
