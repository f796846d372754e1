"""Seeded random BatchNorm parameters and statistics, so that tests see non-trivial normalisation."""

from __future__ import annotations

import torch
from torch import nn


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode with seeded random BatchNorm parameters and statistics."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.normal_()
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()
