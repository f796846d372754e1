"""Re-estimate BatchNorm running statistics after weights change (a rewrite or a pruning step)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, batches: int = 10) -> nn.Module:
    """Reset every BatchNorm's running mean/variance and re-estimate them on ``batches`` training batches.

    Uses a cumulative average (``momentum=None``) so the result does not depend on the
    initial statistics; the model's train/eval mode and the BN momenta are restored.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    was_training = model.training
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for index, (inputs, _) in enumerate(loader):
        if index >= batches:
            break
        model(inputs)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return model
