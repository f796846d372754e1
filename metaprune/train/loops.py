"""Train, fine-tune (optionally with a teacher) and evaluate classification models."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from metaprune.errors import ConfigError
from metaprune.logs import progress_bar
from metaprune.train.distill import distillation_loss

#: Called after every optimizer step as ``on_step(model, step, total_steps)``.
#: Returning ``True`` says the model's parameters were replaced (e.g. channels were
#: physically removed), so the optimizer is rebuilt.
StepHook = Callable[[nn.Module, int, int], bool | None]

OPTIMIZERS = ("sgd", "adamw")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU runs are reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    """What :func:`fit` measured: per-epoch train loss and validation accuracy, wall time."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, targets in loader:
        correct += int((model(inputs).argmax(dim=1) == targets).sum())
        total += int(targets.numel())
    model.train(was_training)
    if total == 0:
        raise ConfigError("cannot evaluate on an empty loader")
    return correct / total


def _make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def _cosine_lr(base_lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    epochs: int,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    optimizer: str = "sgd",
    val_loader: DataLoader | None = None,
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.5,
    kd_temperature: float = 4.0,
    warmup_epochs: float = 0.0,
    on_step: StepHook | None = None,
    progress: bool = True,
    description: str = "train",
) -> FitResult:
    """Train ``model`` in place with a cosine learning-rate schedule.

    With ``teacher`` the loss is :func:`~metaprune.train.distill.distillation_loss`
    (knowledge distillation); otherwise cross-entropy. ``on_step`` lets pruning schedules
    act during training (see :data:`StepHook`). ``epochs=0`` is a no-op.
    """
    if epochs < 0 or lr <= 0:
        raise ConfigError(f"need epochs >= 0 and lr > 0, got epochs={epochs}, lr={lr}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    result = FitResult()
    total_steps = epochs * len(train_loader)
    if total_steps == 0:
        return result
    start = time.perf_counter()
    opt = _make_optimizer(model, optimizer, lr, weight_decay)
    warmup_steps = int(warmup_epochs * len(train_loader))
    if teacher is not None:
        teacher.eval()
    step = 0
    with progress_bar(description, total_steps, enabled=progress) as bar:
        for epoch in range(epochs):
            model.train()
            if hasattr(train_loader.dataset, "set_epoch"):
                train_loader.dataset.set_epoch(epoch)  # fresh augmentation each epoch
            losses = []
            for inputs, targets in train_loader:
                for group in opt.param_groups:
                    group["lr"] = _cosine_lr(lr, step, total_steps, warmup_steps)
                logits = model(inputs)
                if teacher is None:
                    loss = F.cross_entropy(logits, targets)
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                    loss = distillation_loss(logits, teacher_logits, targets, alpha=kd_alpha, temperature=kd_temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                if on_step is not None and on_step(model, step, total_steps):
                    opt = _make_optimizer(model, optimizer, opt.param_groups[0]["lr"], weight_decay)
                bar.advance(status=f"loss {losses[-1]:.3f}")
            result.train_loss.append(float(np.mean(losses)))
            if val_loader is not None:
                result.val_accuracy.append(evaluate(model, val_loader))
    result.wall_time_s = time.perf_counter() - start
    return result
