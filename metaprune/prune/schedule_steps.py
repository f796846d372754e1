"""Step-wise schedules: prune, then train; repeated (iterative), optionally rewinding (lottery)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.schedule_base import Pruner, Schedule, TrainFn, check_positive_int, split_epochs


@dataclass
class OneShot(Schedule):
    """Prune to the target at once, then fine-tune for all epochs."""

    name: ClassVar[str] = "oneshot"

    def _run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        pruner.prune_to(model, flops_ratio)
        train(model, epochs)
        return model


@dataclass
class Iterative(Schedule):
    r"""``steps`` rounds of prune-then-train on a geometric path to the target.

    After round :math:`i` of :math:`k` the FLOPs ratio is :math:`r^{i/k}` (:math:`r` the
    target), so every round removes the same fraction of what is left; the epochs are
    split between rounds by :func:`~metaprune.prune.schedule_base.split_epochs`.
    """

    name: ClassVar[str] = "iterative"
    steps: int = 3

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)

    def _run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        restart = self._restart_point(model)
        for step, step_epochs in enumerate(split_epochs(epochs, self.steps), start=1):
            pruner.prune_to(model, flops_ratio ** (step / self.steps))
            restart(model)
            train(model, step_epochs)
        return model

    def _restart_point(self, model: nn.Module) -> Callable[[nn.Module], None]:
        """What each round does to the surviving weights before training: keep them (fine-tuning)."""
        return lambda _pruned: None


def rewind_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into every parameter and buffer of ``model`` except the pruning masks.

    A masked layer's ``weight_orig`` is read from ``state``'s ``weight_orig`` or, for a state
    saved before masking, its ``weight``; masked positions stay masked because the masks
    are left alone.
    """
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("_mask"):
                continue
            source = state.get(key)
            if source is None and key.endswith("_orig"):
                source = state.get(key.removesuffix("_orig"))
            if source is None:
                raise ConfigError(f"the rewind state has no entry for {key!r}; save it from the same architecture")
            if source.shape != tensor.shape:
                raise ConfigError(f"rewind state {key!r} has shape {tuple(source.shape)}, the model {tuple(tensor.shape)}")
            tensor.copy_(source)


@dataclass
class Lottery(Iterative):
    r"""Iterative magnitude pruning with weight rewinding (stabilised lottery tickets, Frankle et al. 2019).

    Round :math:`i` of :math:`k` prunes to :math:`r^{i/k}` with the pruner's criterion,
    rewinds the surviving weights (``weight_orig``, biases, normalisation parameters and
    statistics) to ``rewind_state`` and retrains. ``rewind_state`` should be the dense
    model early in its training (e.g. after ~10% of it); without one the schedule rewinds
    to the weights it was given, which amounts to repeated fine-tuning from the trained
    dense model ("fine-tuning rewinding").
    """

    name: ClassVar[str] = "lottery"
    needs_masks: ClassVar[bool] = True
    rewind_state: dict[str, torch.Tensor] | None = None

    def _restart_point(self, model: nn.Module) -> Callable[[nn.Module], None]:
        """Rewind to ``rewind_state``, copied now so later training cannot alter it."""
        state = model.state_dict() if self.rewind_state is None else self.rewind_state
        snapshot = {key: tensor.detach().clone() for key, tensor in state.items()}
        return lambda pruned: rewind_weights(pruned, snapshot)
