"""What every pruning schedule shares: the pruner and trainer it drives, and the run contract.

A schedule decides *when* to prune and by how much (in FLOPs ratio), interleaved with
training; the pruner decides *what* to prune. Any object with ``prune_to(model,
flops_ratio)``, ``plan(flops_ratio)`` and ``uses_masks`` is a pruner
(:class:`~metaprune.prune.structured.StructuredPruner`, :class:`~metaprune.prune.masks.MaskPruner`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Protocol

from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.budget import Budget
from metaprune.prune.plan import PrunePlan


class Pruner(Protocol):
    """Prunes a model in place to a fraction of its dense FLOPs."""

    uses_masks: bool

    def prune_to(self, model: nn.Module, flops_ratio: float) -> None:
        """Prune ``model`` in place to ``flops_ratio`` of the dense FLOPs."""

    def plan(self, flops_ratio: float | None = None) -> PrunePlan:
        """The recipe of the current pruning."""


#: ``train(model, epochs, on_step=None)``: train in place for ``epochs`` epochs, calling
#: ``on_step(model, step, total_steps)`` after every optimizer step (see :func:`metaprune.train.fit`).
TrainFn = Callable[..., None]


def split_epochs(epochs: int, steps: int) -> list[int]:
    """Split ``epochs`` over ``steps`` as evenly as possible, the remainder going to the last steps.

    Every step gets at least one epoch when ``epochs >= steps``; e.g. 7 over 3 is ``[2, 2, 3]``.
    """
    parts = [epochs // steps] * steps
    for index in range(epochs % steps):
        parts[-1 - index] += 1
    return parts


def check_positive_int(name: str, value: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


class Schedule(ABC):
    """When and how much to prune during fine-tuning; subclasses set :attr:`name`."""

    name: ClassVar[str]
    #: schedules that revive or rewind single weights cannot run on physically removed channels
    needs_masks: ClassVar[bool] = False

    def run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        """Prune ``model`` to ``flops_ratio`` of its dense FLOPs with ``epochs`` of training; return it."""
        Budget.from_ratio(flops_ratio)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(f"fine-tune epochs must be an integer >= 0, got {epochs!r}")
        if self.needs_masks and not pruner.uses_masks:
            raise ConfigError(
                f"the {self.name} schedule works on weight masks, not removed channels: "
                "use --pattern unstructured or n:m (a MaskPruner)"
            )
        return self._run(model, pruner, train, flops_ratio, epochs)

    @abstractmethod
    def _run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        """The schedule itself, on validated arguments."""

