"""A multilayer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.models.registry import register_model


class MLP(nn.Module):
    """``flatten -> [Linear -> ReLU] * len(hidden_sizes) -> Linear``."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], num_classes: int) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for hidden in hidden_sizes:
            modules += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
            features = hidden
        modules.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 16,
        hidden_sizes: Sequence[int] = (256, 128)) -> MLP:
    """MLP for ``in_channels x image_size x image_size`` inputs with the given hidden widths."""
    if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence) or not all(
            isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in hidden_sizes):
        raise ConfigError(f"hidden_sizes must be a sequence of positive integers, got {hidden_sizes!r}")
    return MLP(in_channels * image_size * image_size, list(hidden_sizes), num_classes)
