"""Helpers of the diffusion tests: the tiny UNet config, its builder and random hard gates."""

from __future__ import annotations

import torch

from metaprune.diffusion.teacher import UNetConfig

TINY = UNetConfig(block_out_channels=(16, 32), norm_num_groups=4, attention_head_dim=4, cross_attention_dim=24)
CONTEXT_LENGTH = 5


def build_tiny_unet(seed: int = 0) -> torch.nn.Module:
    """The tiny UNet with every weight and norm parameter perturbed, so no slice is trivially zero."""
    torch.manual_seed(seed)
    unet = TINY.build().eval()
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                torch.nn.init.normal_(module.weight)
                torch.nn.init.normal_(module.bias)
        for parameter in unet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return unet


def random_hard_gates(layout, keep: float = 0.5, kinds=None, seed: int = 0) -> torch.Tensor:
    """Hard gates, ``keep`` of them on for the groups of ``kinds`` (all kinds when None), never empty."""
    generator = torch.Generator().manual_seed(seed)
    gates = torch.ones(len(layout))
    for group in layout.groups:
        if kinds is None or group.kind in kinds:
            start = layout.offsets[group.name]
            gates[start:start + group.size] = (torch.rand(group.size, generator=generator) < keep).float()
    return layout.ensure_nonempty(gates, torch.rand(len(layout), generator=generator))[0]
