"""In-training schedules: gradual pruning (Zhu & Gupta 2017) and prune-and-regrow (GraNet-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.masks import Calibration, gemm_view, get_masks, set_masks, weight_gradients
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


def drop_and_regrow(model: nn.Module, fraction: float, calibration: Calibration,
                    n_m: tuple[int, int] | None = None) -> dict[str, int]:
    """Move ``fraction`` of every masked layer's active weights; return how many moved per layer.

    In each layer the ``round(fraction * active)`` active weights of smallest magnitude are
    masked and as many masked positions with the largest dense gradient magnitude on
    ``calibration`` are activated, initialised to zero (only positions with a non-zero
    gradient: one that gets none, e.g. behind an always-zero input, would stay a dead zero). Candidates for regrowth are the
    positions masked before this call, so a weight is never dropped and regrown at once.
    Layer densities do not change.

    With ``n_m=(n, m)`` weights move only *within* their run of ``m`` (see
    :func:`~metaprune.prune.masks.check_n_m`): every run regrows as many weights as it
    dropped, so an N:M mask stays N:M. Moving weights across runs would leave runs with
    fewer than ``n`` weights, which the next N:M pruning step cannot refill: the density
    would ratchet down below ``n/m`` at every step.
    """
    masks = get_masks(model)
    gradients = weight_gradients(model, list(masks), calibration)
    moved = {}
    for name, mask in masks.items():
        module = model.get_submodule(name)
        magnitude = module.weight_orig.detach().abs()
        growth = gradients[name].abs()
        if n_m is None:
            new_mask, grown, moved[name] = _move_anywhere(mask, magnitude, growth, fraction)
        else:  # N:M runs lie along the GEMM reduction dimension
            gemm_mask, gemm_grown, moved[name] = _move_within_runs(
                gemm_view(module, mask), gemm_view(module, magnitude), gemm_view(module, growth), fraction, n_m)
            new_mask, grown = gemm_view(module, gemm_mask), gemm_view(module, gemm_grown)
        masks[name] = new_mask
        with torch.no_grad():
            module.weight_orig.masked_fill_(grown, 0.0)
    set_masks(model, masks)
    return moved


def _move_anywhere(mask: torch.Tensor, magnitude: torch.Tensor, growth: torch.Tensor,
                   fraction: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Unstructured move: the smallest active magnitudes out, the largest masked gradients in."""
    active = int(mask.sum())
    growable = int(((growth > 0) & ~mask).sum())  # a zero gradient (e.g. a dead input) would regrow a dead weight
    count = min(round(fraction * active), growable)
    grown = torch.zeros_like(mask)
    if count == 0:
        return mask, grown, 0
    dropped = torch.topk(magnitude.masked_fill(~mask, math.inf).flatten(), count, largest=False).indices
    grown.view(-1)[torch.topk(growth.masked_fill(mask, -math.inf).flatten(), count).indices] = True
    new_mask = mask.clone()
    new_mask.view(-1)[dropped] = False
    return new_mask | grown, grown, count


def _move_within_runs(mask: torch.Tensor, magnitude: torch.Tensor, growth: torch.Tensor, fraction: float,
                      n_m: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """N:M move on ``[out, reduction]`` tensors: each run regrows, from its own masked positions, as many as it drops.

    The ``round(fraction * active)`` drops are the smallest active magnitudes of the layer, taking
    at most ``min(n, m - n)`` per run (a run has at least ``m - n`` masked positions to regrow into)
    and no more than the run has masked positions with a non-zero gradient.
    """
    n, m = n_m
    shape = mask.shape
    runs_mask = mask.reshape(shape[0], -1, m)
    per_run = min(n, m - n)
    count = min(round(fraction * int(mask.sum())), per_run * runs_mask.shape[0] * runs_mask.shape[1])
    if count == 0 or per_run == 0:
        return mask, torch.zeros_like(mask), 0
    # per run, active weights by increasing magnitude; only the first per_run may be dropped, and no more
    # than the run has masked positions with a non-zero gradient to regrow (a zero one would stay dead)
    growth = growth.reshape(runs_mask.shape).masked_fill(runs_mask, -math.inf)
    growable = (growth > 0).sum(-1, keepdim=True)
    order = magnitude.reshape(runs_mask.shape).masked_fill(~runs_mask, math.inf).sort(dim=-1)
    eligible = order.values[..., :per_run].masked_fill(torch.arange(per_run) >= growable, math.inf)
    chosen = torch.zeros(eligible.numel(), dtype=torch.bool)
    chosen[torch.topk(eligible.flatten(), count, largest=False).indices] = True
    chosen = chosen.reshape(eligible.shape) & torch.isfinite(eligible)
    drops_per_run = chosen.sum(-1, keepdim=True)
    dropped = torch.zeros_like(runs_mask).scatter_(-1, order.indices[..., :per_run], chosen)
    # per run, masked positions by decreasing gradient; the first drops_per_run are regrown
    growth_order = growth.argsort(dim=-1, descending=True)
    rank = torch.arange(m).expand_as(runs_mask)
    grown = torch.zeros_like(runs_mask).scatter_(-1, growth_order, rank < drops_per_run) & ~runs_mask
    new_mask = (runs_mask & ~dropped) | grown
    return new_mask.reshape(shape), grown.reshape(shape), int(chosen.sum())


@dataclass
class Regrow(Gradual):
    r"""Gradual pruning plus prune-and-regrow at every pruning step (GraNet-style, Liu et al. 2021).

    After pruning to :math:`r_t`, :func:`drop_and_regrow` moves a fraction
    :math:`\zeta_t = \zeta_0 (1 + \cos(\pi t / t_\text{end})) / 2` of each layer's active
    weights (cosine-decayed from ``regrow_fraction`` to 0 at the end of pruning) from the
    smallest magnitudes to the masked positions with the largest gradient, computed on
    the pruner's calibration batch. The net density follows the gradual schedule; the
    rebuilt optimizer starts the regrown weights without stale momentum. With an N:M
    pruner (``pruner.n_m``) weights move within their run of ``m``, so the mask stays N:M.
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
        drop_and_regrow(model, fraction, pruner.calibration, getattr(pruner, "n_m", None))
