"""Analytic MACs of a gated UNet as a differentiable function of its gates.

One UNet forward costs

.. math:: M(g) = M_0 + \\sum_{b \\in \\text{depth}} g_b \\Big(F_b + \\sum_{j \\in b} \\sum_u g_{j,u} c_j\\Big)
          + \\sum_{j \\notin \\text{depth}} \\sum_u g_{j,u} c_j

where ``c_j`` is the cost of one gate of group ``j`` (a channel group's rows of ``conv1`` and
``time_emb_proj`` and columns of ``conv2``; a head's q/k/v rows, its two attention products and
its ``to_out`` columns; a GEGLU group's rows and output columns), ``F_b`` the ungated rest of a
depth-gated block (a transformer's ``proj_in`` and ``proj_out``) and ``M_0`` everything else,
taken from :func:`metaprune.flops.count_flops` of the dense model, so ``M(1)`` is the dense
count exactly; for hard gates ``M(g)`` equals the count of the sliced expert (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.diffusion.gates import GateGroup, GateLayout, mask_target
from metaprune.errors import ConfigError
from metaprune.flops import count_flops


class UNetCall(nn.Module):
    """``unet(sample, t, context)`` as a one-input module, for metaprune's FLOP counters."""

    def __init__(self, unet: nn.Module, context_length: int, timestep: int = 500) -> None:
        super().__init__()
        self.unet = unet
        self.context = torch.zeros(1, context_length, unet.config.cross_attention_dim)
        self.timestep = timestep

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """Noise prediction for ``sample`` at the fixed time step and a zero context."""
        context = self.context.expand(sample.shape[0], -1, -1)
        return self.unet(sample, self.timestep, encoder_hidden_states=context, return_dict=False)[0]


def example_sample(unet: nn.Module) -> torch.Tensor:
    """A ``1 x C x H x W`` zero input of ``unet``."""
    size = unet.config.sample_size
    return torch.zeros(1, unet.config.in_channels, size, size)


def count_unet_macs(unet: nn.Module, context_length: int) -> int:
    """MACs of one forward pass for one sample (FLOPs / 2 from FlopCounterMode)."""
    return count_flops(UNetCall(unet, context_length), example_sample(unet)) // 2


def _record_shapes(unet: nn.Module, layout: GateLayout, context_length: int) -> dict[str, tuple]:
    """Input shapes that the per-gate costs need, from one forward pass."""
    shapes: dict[str, tuple] = {}
    handles = []
    for group in layout.groups:
        module = unet.get_submodule(group.module)
        if group.kind != "depth":
            target = mask_target(group, module)  # its input holds the token / pixel count
        elif hasattr(module, "proj_in"):
            target = module.proj_in
        else:
            continue
        if group.kind == "head":
            handles.append(module.to_k.register_forward_pre_hook(
                lambda _m, args, name=group.name: shapes.__setitem__(name + ":key", tuple(args[0].shape))))
        handles.append(target.register_forward_pre_hook(
            lambda _m, args, name=group.name: shapes.__setitem__(name, tuple(args[0].shape))))
    try:
        with torch.no_grad():
            UNetCall(unet, context_length)(example_sample(unet))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _unit_cost(unet: nn.Module, group: GateGroup, shapes: dict[str, tuple]) -> int:
    module = unet.get_submodule(group.module)
    if group.kind == "channel":
        pixels = shapes[group.name][2] * shapes[group.name][3]
        per_channel = pixels * (module.conv1.weight[0].numel() + module.conv2.out_channels * module.conv2.weight[0, 0].numel())
        per_channel += module.time_emb_proj.in_features if module.time_emb_proj is not None else 0
        return group.unit * per_channel
    if group.kind == "head":
        queries, keys = shapes[group.name][1], shapes[group.name + ":key"][1]
        projections = queries * module.to_q.in_features + keys * (module.to_k.in_features + module.to_v.in_features)
        return group.unit * (projections + 2 * queries * keys + queries * module.to_out[0].out_features)
    tokens = shapes[group.name][1]
    return group.unit * tokens * (2 * module.net[0].proj.in_features + module.net[2].out_features)


def _block_fixed_cost(block: nn.Module, tokens_shape: tuple | None) -> int:
    """Ungated MACs of a depth-gated block: a transformer's 1 x 1 projections; nothing for a resnet."""
    if tokens_shape is None:
        return 0
    tokens = tokens_shape[2] * tokens_shape[3]
    return tokens * (block.proj_in.weight.numel() + block.proj_out.weight.numel())


class MacModel:
    """``M(g)`` of the module docstring for one UNet and gate layout (MACs per sample)."""

    def __init__(self, unet: nn.Module, layout: GateLayout, context_length: int) -> None:
        shapes = _record_shapes(unet, layout, context_length)
        self.layout = layout
        self.dense = count_unet_macs(unet, context_length)
        self.unit_costs = torch.zeros(len(layout), dtype=torch.float64)
        self.block_fixed: dict[str, float] = {}
        gated_total = 0
        for group in layout.groups:
            if group.kind == "depth":
                continue
            cost = _unit_cost(unet, group, shapes)
            start = layout.offsets[group.name]
            self.unit_costs[start:start + group.size] = cost
            gated_total += cost * group.size
        for group in layout.groups:
            if group.kind != "depth":
                continue
            fixed = _block_fixed_cost(unet.get_submodule(group.module), shapes.get(group.name))
            self.block_fixed[group.name] = fixed
            gated_total += fixed
        self.fixed = self.dense - gated_total
        if self.fixed < 0:
            raise ConfigError("gate costs exceed the dense MACs; the layout does not match the UNet")

    def macs(self, gates: torch.Tensor) -> torch.Tensor:
        """MACs per sample (``B``, float64, differentiable in ``gates``) for ``B x G`` or ``G`` gates."""
        gates = self.layout.check(gates).to(torch.float64)
        per_gate = gates * self.unit_costs
        total = torch.full((gates.shape[0],), float(self.fixed), dtype=torch.float64)
        for group in self.layout.groups:
            if group.kind == "depth":
                continue
            cost = self.layout.slice_of(per_gate, group.name).sum(-1)
            if group.parent is not None:
                cost = cost * self.layout.slice_of(gates, group.parent)[:, 0]
            total = total + cost
        for name, fixed in self.block_fixed.items():
            total = total + fixed * self.layout.slice_of(gates, name)[:, 0]
        return total

    def ratio(self, gates: torch.Tensor) -> torch.Tensor:
        """MACs relative to the dense UNet, per sample."""
        return self.macs(gates) / self.dense
