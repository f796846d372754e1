"""The static baseline: one pruned UNet for every prompt, chosen by weight importance.

Each gate (channel group, head, GEGLU group) is scored by its weights:

* ``magnitude``: mean absolute value of the weights that *produce* the unit (``conv1`` rows,
  ``to_q``/``to_k``/``to_v`` rows, GEGLU projection rows);
* ``group_l2``: L2 norm of every weight coupled to the unit (producing rows, consuming columns
  of ``conv2``/``to_out``/``net[2]``, ``time_emb_proj`` rows and ``norm2`` scales).

Every group keeps the same fraction of its best gates (at least one), the largest fraction whose
MAC ratio does not exceed the target; the best remaining gates then fill the budget up
(:func:`static_gates`). Depth gates stay on.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.diffusion.gates import GateGroup, GateLayout
from metaprune.diffusion.losses import check_budget
from metaprune.diffusion.macs import MacModel
from metaprune.errors import ConfigError

CRITERIA = ("magnitude", "group_l2")


def _unit_rows(weight: torch.Tensor, unit: int) -> torch.Tensor:
    """``weight`` (out x ...) as ``units x -1`` with ``unit`` consecutive rows per gate."""
    return weight.reshape(weight.shape[0] // unit, -1)


def _unit_columns(weight: torch.Tensor, unit: int) -> torch.Tensor:
    """Input columns of ``weight`` (out x in x ...) grouped per gate as ``units x -1``."""
    columns = weight.transpose(0, 1)
    return columns.reshape(columns.shape[0] // unit, -1)


def _coupled_weights(module: nn.Module, group: GateGroup) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Producing and consuming weights of every gate, each ``size x -1``."""
    unit = group.unit
    if group.kind == "channel":
        producing = [_unit_rows(module.conv1.weight, unit)]
        consuming = [_unit_columns(module.conv2.weight, unit), _unit_rows(module.norm2.weight[:, None], unit)]
        if module.time_emb_proj is not None:
            consuming.append(_unit_rows(module.time_emb_proj.weight, unit))
        return producing, consuming
    if group.kind == "head":
        producing = [_unit_rows(layer.weight, unit) for layer in (module.to_q, module.to_k, module.to_v)]
        return producing, [_unit_columns(module.to_out[0].weight, unit)]
    values, gates = module.net[0].proj.weight.chunk(2, dim=0)
    return [_unit_rows(values, unit), _unit_rows(gates, unit)], [_unit_columns(module.net[2].weight, unit)]


@torch.no_grad()
def gate_importance(unet: nn.Module, layout: GateLayout, criterion: str = "group_l2") -> torch.Tensor:
    """One score per gate (``G``); depth gates score ``inf`` (never removed by the static baseline)."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")
    scores = torch.full((len(layout),), float("inf"))
    for group in layout.groups:
        if group.kind == "depth":
            continue
        producing, consuming = _coupled_weights(unet.get_submodule(group.module), group)
        if criterion == "magnitude":
            score = torch.cat(producing, dim=1).abs().mean(1)
        else:
            score = torch.cat(producing + consuming, dim=1).pow(2).sum(1).sqrt()
        start = layout.offsets[group.name]
        scores[start:start + group.size] = score
    return scores


def uniform_keep(layout: GateLayout, scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Hard gates keeping the top ``max(1, round(fraction * size))`` gates of every group."""
    gates = torch.ones(len(layout))
    for group in layout.groups:
        if group.kind == "depth":
            continue
        start = layout.offsets[group.name]
        keep = max(1, round(fraction * group.size))
        order = scores[start:start + group.size].argsort(descending=True)
        block = torch.zeros(group.size)
        block[order[:keep]] = 1.0
        gates[start:start + group.size] = block
    return gates


def static_gates(unet: nn.Module, layout: GateLayout, macs: MacModel, target_ratio: float,
                 criterion: str = "group_l2") -> torch.Tensor:
    """Hard gates of the static baseline with a MAC ratio as close to ``target_ratio`` as possible from below.

    The largest uniform keep fraction within the budget first; then the remaining gates, best
    first by score relative to their group's mean (scores of different layers are not on one
    scale), are added while the ratio stays ``<= target_ratio``.
    """
    check_budget(target_ratio)
    scores = gate_importance(unet, layout, criterion)
    best = uniform_keep(layout, scores, 0.0)
    for step in range(101):
        candidate = uniform_keep(layout, scores, step / 100)
        if macs.ratio(candidate).item() <= target_ratio:
            best = candidate
    relative = scores.clone()
    for group in layout.groups:
        start = layout.offsets[group.name]
        block = relative[start:start + group.size]
        relative[start:start + group.size] = block / block.mean() if torch.isfinite(block).all() else block
    candidates = ((best == 0) & torch.isfinite(relative)).nonzero().squeeze(1)
    for gate in candidates[relative[candidates].argsort(descending=True)].tolist():
        best[gate] = 1.0
        if macs.ratio(best).item() > target_ratio:
            best[gate] = 0.0
    return best
