"""Small networks for metanetwork tests, and a channel-permutation helper."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class SmallResNet(nn.Module):
    """stem conv-BN-ReLU, one residual block (conv_a-BN-ReLU-conv_b-BN + stem), mean pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv_a, self.norm_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.norm_b = nn.Conv2d(4, 3, 1, bias=False), nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = F.relu(self.stem_norm(self.stem(x)))
        block = self.norm_b(self.conv_b(F.relu(self.norm_a(self.conv_a(stem)))))
        return self.head(F.relu(block + stem).mean((2, 3)))


class SmallMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5), nn.BatchNorm1d(5), nn.ReLU(),
                                    nn.Linear(5, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def permuted(model: nn.Module, producers: list[str], consumers: list[str], permutation: torch.Tensor) -> nn.Module:
    """Copy of ``model`` whose channels are reordered by ``permutation`` without changing its function.

    ``producers`` are the Conv/BN modules whose outputs are the permuted channels (their weights,
    biases and statistics are permuted along dim 0); ``consumers`` read those channels (their
    weights are permuted along dim 1).
    """
    result = copy.deepcopy(model)
    with torch.no_grad():
        for name in producers:
            module = result.get_submodule(name)
            for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                if tensor.dim() > 0:
                    tensor.copy_(tensor[permutation])
        for name in consumers:
            weight = result.get_submodule(name).weight
            weight.copy_(weight[:, permutation])
    return result
