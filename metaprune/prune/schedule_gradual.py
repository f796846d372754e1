"""In-training schedules: gradual pruning (Zhu & Gupta 2017) and prune-and-regrow (GraNet-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.masks import Calibration, get_masks, set_masks, weight_gradients
from metaprune.prune.schedule_base import Pruner, Schedule, TrainFn, check_positive_int


def gradual_ratio(step: int, end_step: int, target: float) -> float:
    r"""Cubic FLOPs-ratio schedule: :math:`r_t = r + (1 - r)(1 - \min(t, t_\text{end}) / t_\text{end})^3`.

    1 at step 0, falling fast at first and slowly near the end, exactly ``target`` from ``end_step`` on.
    """
    progress = min(step, end_step) / end_step
    return target + (1.0 - target) * (1.0 - progress) ** 3


@dataclass
class Gradual(Schedule):
    """Prune during fine-tuning along :func:`gradual_ratio` (Zhu & Gupta, "To prune, or not to prune").

    Every ``frequency`` optimizer steps until ``end_fraction`` of training (and at that last
    step, so it ends exactly on the target) the model is pruned to :math:`r_t`; the step hook
    then asks the trainer to rebuild its optimizer, as physical removals replace parameters.
    ``frequency=None`` spreads ten pruning steps over the pruning window. With no epochs at
    all the model is pruned to the target at once.
    """

    name: ClassVar[str] = "gradual"
    frequency: int | None = None
    end_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.frequency is not None:
            check_positive_int("frequency", self.frequency)
        if not 0.0 < self.end_fraction <= 1.0:
            raise ConfigError(f"end_fraction must be in (0, 1], got {self.end_fraction}")

    def _run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        if epochs == 0:
            pruner.prune_to(model, flops_ratio)
            return model

        def on_step(trained: nn.Module, step: int, total_steps: int) -> bool:
            end_step = max(1, round(self.end_fraction * total_steps))
            frequency = self.frequency or max(1, end_step // 10)
            if step > end_step or (step % frequency and step != end_step):
                return False
            pruner.prune_to(trained, gradual_ratio(step, end_step, flops_ratio))
            self._after_pruning(trained, pruner, step, end_step)
            return True

        train(model, epochs, on_step)
        return model

    def _after_pruning(self, model: nn.Module, pruner: Pruner, step: int, end_step: int) -> None:
        """Hook for subclasses, called after every pruning step; gradual pruning does nothing more."""


def drop_and_regrow(model: nn.Module, fraction: float, calibration: Calibration) -> dict[str, int]:
    """Move ``fraction`` of every masked layer's active weights; return how many moved per layer.

    In each layer the ``round(fraction * active)`` active weights of smallest magnitude are
    masked and as many masked positions with the largest dense gradient magnitude on
    ``calibration`` are activated, initialised to zero. Candidates for regrowth are the
    positions masked before this call, so a weight is never dropped and regrown at once.
    Layer densities do not change.
    """
    masks = get_masks(model)
    gradients = weight_gradients(model, list(masks), calibration)
    moved = {}
    for name, mask in masks.items():
        module = model.get_submodule(name)
        active = int(mask.sum())
        count = min(round(fraction * active), mask.numel() - active)
        moved[name] = count
        if count == 0:
            continue
        magnitude = module.weight_orig.detach().abs().masked_fill(~mask, math.inf).flatten()
        growth = gradients[name].abs().masked_fill(mask, -math.inf).flatten()
        dropped = torch.topk(magnitude, count, largest=False).indices
        grown = torch.topk(growth, count).indices
        new_mask = mask.flatten().clone()
        new_mask[dropped] = False
        new_mask[grown] = True
        masks[name] = new_mask.reshape(mask.shape)
        with torch.no_grad():
            module.weight_orig.view(-1).index_fill_(0, grown, 0.0)
    set_masks(model, masks)
    return moved


@dataclass
class Regrow(Gradual):
    r"""Gradual pruning plus prune-and-regrow at every pruning step (GraNet-style, Liu et al. 2021).

    After pruning to :math:`r_t`, :func:`drop_and_regrow` moves a fraction
    :math:`\zeta_t = \zeta_0 (1 + \cos(\pi t / t_\text{end})) / 2` of each layer's active
    weights (cosine-decayed from ``regrow_fraction`` to 0 at the end of pruning) from the
    smallest magnitudes to the masked positions with the largest gradient, computed on
    the pruner's calibration batch. The net density follows the gradual schedule; the
    rebuilt optimizer starts the regrown weights without stale momentum.
    """

    name: ClassVar[str] = "regrow"
    needs_masks: ClassVar[bool] = True
    regrow_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.regrow_fraction < 1.0:
            raise ConfigError(f"regrow_fraction must be in [0, 1), got {self.regrow_fraction}")

    def _run(self, model: nn.Module, pruner: Pruner, train: TrainFn, flops_ratio: float, epochs: int) -> nn.Module:
        if getattr(pruner, "calibration", None) is None:
            raise ConfigError("the regrow schedule needs gradients: give the pruner a calibration batch (inputs, targets)")
        return super()._run(model, pruner, train, flops_ratio, epochs)

    def _after_pruning(self, model: nn.Module, pruner: Pruner, step: int, end_step: int) -> None:
        """Move the decayed fraction of weights from small magnitudes to large gradients."""
        fraction = self.regrow_fraction * (1.0 + math.cos(math.pi * min(step, end_step) / end_step)) / 2.0
        drop_and_regrow(model, fraction, pruner.calibration)
