"""Analytic FLOPs of a model as a function of how many channels each group keeps.

A Conv/Linear layer's FLOPs are bilinear in its input and output widths, so with
:math:`\\rho_g = k_g / n_g` the kept fraction of group :math:`g`,

.. math:: F(k) = \\sum_{\\ell} F_\\ell\\,\\rho_{\\mathrm{out}(\\ell)}\\,\\rho_{\\mathrm{in}(\\ell)}
          + \\sum_{a} F_a\\,\\rho_{\\mathrm{heads}(a)} + F_{\\mathrm{rest}},

where :math:`F_\\ell` are the dense per-layer FLOPs measured once with
:func:`metaprune.flops.flops_by_module`, :math:`F_a` the attention products of attention
module :math:`a`, and a layer with no prunable group on one side has :math:`\\rho = 1` there.
It is exact for convolutions and linear layers and cheap enough for search loops.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.flops import flops_by_module
from metaprune.prune.groups import CONV_LINEAR, ModelGroups


class GroupCostModel:
    """FLOPs as a function of per-group keep counts, for one dense model."""

    def __init__(self, groups: ModelGroups):
        model, example_input = groups.model, groups.example_input
        own = flops_by_module(model, example_input)
        self.group_names = [group.name for group in groups.groups]
        self.sizes = torch.tensor([groups.current_size(group) for group in groups.groups], dtype=torch.float64)
        index = {name: position for position, name in enumerate(self.group_names)}
        out_of = {layer: index[g.name] for g in groups.groups for layer in g.out_layers}
        in_of = {layer: index[g.name] for g in groups.groups for layer in g.in_layers}
        modules = dict(model.named_modules())
        terms_flops, terms_out, terms_in = [], [], []
        self.constant = 0.0
        for name, flops in own.items():
            if flops == 0:
                continue
            module = modules.get(name)
            if isinstance(module, CONV_LINEAR) or name in groups.attention:
                # Attention products scale with the number of heads kept, like qkv's output.
                out_group = index[name] if name in groups.attention else out_of.get(name, -1)
                in_group = -1 if name in groups.attention else in_of.get(name, -1)
                if isinstance(module, nn.Conv2d) and module.groups > 1 and in_group == out_group:
                    in_group = -1  # depthwise: one group sets both widths, FLOPs are linear in it
                terms_flops.append(float(flops))
                terms_out.append(out_group)
                terms_in.append(in_group)
            else:
                self.constant += float(flops)
        self.term_flops = torch.tensor(terms_flops, dtype=torch.float64)
        self.term_out = torch.tensor(terms_out, dtype=torch.long)
        self.term_in = torch.tensor(terms_in, dtype=torch.long)
        self.dense_flops = self.flops(self.sizes)

    def flops(self, keep_counts: torch.Tensor) -> float:
        """FLOPs when group ``i`` keeps ``keep_counts[i]`` of its ``sizes[i]`` channels."""
        ratios = torch.cat([keep_counts.to(torch.float64) / self.sizes, torch.ones(1, dtype=torch.float64)])
        return float((self.term_flops * ratios[self.term_out] * ratios[self.term_in]).sum() + self.constant)

    def flops_of_ratios(self, keep_ratios: dict[str, float]) -> float:
        """FLOPs for keep ratios by group name (missing groups keep everything)."""
        counts = torch.tensor(
            [max(1.0, round(keep_ratios.get(name, 1.0) * float(size))) for name, size in zip(self.group_names, self.sizes)],
            dtype=torch.float64,
        )
        return self.flops(counts)
