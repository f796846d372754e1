"""Physical slicing: a copy of the UNet with the gated-off channels, heads, units and blocks removed.

For hard gates ``g`` the sliced model equals ``GateController`` running the full model under
``g`` (up to float summation order): the removed slices only ever multiplied zeros.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from metaprune.diffusion.gates import GateGroup, GateLayout, check_hard
from metaprune.errors import PruneError


class SkipBlock(nn.Module):
    """Stands in for a removed shape-preserving block: returns its input (as a 1-tuple when asked)."""

    def __init__(self, returns_tuple: bool) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        """The identity on ``hidden_states``; every other argument is ignored."""
        return (hidden_states,) if self.returns_tuple else hidden_states


def _keep_index(kept_gates: torch.Tensor, unit: int) -> torch.Tensor:
    gates = kept_gates.nonzero().squeeze(-1)
    return (gates[:, None] * unit + torch.arange(unit)).reshape(-1)


def _slice_linear(layer: nn.Linear | nn.Conv2d, rows: torch.Tensor | None = None,
                  columns: torch.Tensor | None = None) -> None:
    """Keep output ``rows`` and/or input ``columns`` of a Linear or Conv2d, in place."""
    weight = layer.weight.data
    if rows is not None:
        weight = weight[rows]
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[rows].clone())
    if columns is not None:
        weight = weight[:, columns]
    layer.weight = nn.Parameter(weight.clone())
    attribute = ("out_features", "in_features") if isinstance(layer, nn.Linear) else ("out_channels", "in_channels")
    setattr(layer, attribute[0], weight.shape[0])
    setattr(layer, attribute[1], weight.shape[1])


def _slice_resnet(resnet: nn.Module, kept: torch.Tensor, group: GateGroup) -> None:
    index = _keep_index(kept, group.unit)
    _slice_linear(resnet.conv1, rows=index)
    if resnet.time_emb_proj is not None:
        _slice_linear(resnet.time_emb_proj, rows=index)
    norm = resnet.norm2
    sliced = nn.GroupNorm(int(kept.sum()), len(index), eps=norm.eps, affine=norm.affine)
    if norm.affine:
        sliced.weight = nn.Parameter(norm.weight.data[index].clone())
        sliced.bias = nn.Parameter(norm.bias.data[index].clone())
    resnet.norm2 = sliced
    _slice_linear(resnet.conv2, columns=index)


def _slice_attention(attention: nn.Module, kept: torch.Tensor, group: GateGroup) -> None:
    index = _keep_index(kept, group.unit)
    for projection in (attention.to_q, attention.to_k, attention.to_v):
        _slice_linear(projection, rows=index)
    _slice_linear(attention.to_out[0], columns=index)
    attention.heads = int(kept.sum())
    attention.inner_dim = len(index)
    attention.sliceable_head_dim = attention.heads


def _slice_feed_forward(feed_forward: nn.Module, kept: torch.Tensor, group: GateGroup) -> None:
    index = _keep_index(kept, group.unit)
    hidden = feed_forward.net[2].in_features
    # GEGLU's projection holds the values and then the gates of the same units.
    _slice_linear(feed_forward.net[0].proj, rows=torch.cat([index, index + hidden]))
    _slice_linear(feed_forward.net[2], columns=index)


_SLICERS = {"channel": _slice_resnet, "head": _slice_attention, "ff": _slice_feed_forward}


def slice_unet(unet: nn.Module, layout: GateLayout, gates: torch.Tensor) -> nn.Module:
    """A sliced deep copy of ``unet`` for one hard gate vector (``G`` values in ``{0, 1}``).

    Raises PruneError for soft gates or a channel/head/ff group with no gate left in a block
    that is kept (use :meth:`GateLayout.ensure_nonempty`).
    """
    gates = check_hard(layout.check(gates))
    if gates.shape[0] != 1:
        raise PruneError(f"slice one architecture at a time, got gates for {gates.shape[0]}")
    gates = gates[0]
    expert = copy.deepcopy(unet)
    removed = {group.name for group in layout.groups if group.kind == "depth" and layout.slice_of(gates, group.name)[0] == 0}
    for group in layout.groups:
        if group.kind == "depth" or group.parent in removed:
            continue
        kept = layout.slice_of(gates, group.name)
        if kept.sum() == 0:
            raise PruneError(f"gate group {group.name} keeps nothing; keep at least one gate or remove its block")
        if kept.sum() < group.size:
            _SLICERS[group.kind](expert.get_submodule(group.module), kept, group)
    for group in layout.groups:
        if group.name in removed:
            tuple_output = not type(expert.get_submodule(group.module)).__name__.startswith("Resnet")
            expert.set_submodule(group.module, SkipBlock(returns_tuple=tuple_output))
    return expert
