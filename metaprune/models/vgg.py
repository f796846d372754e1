"""CIFAR-style VGG-11/16/19 with batch normalisation (Simonyan & Zisserman, 2015).

3x3 conv + BN + ReLU layers separated by 2x2 max-pools, adaptive average pooling to 1x1 and a
single linear head. A max-pool that would shrink the feature map below 1x1 is left out, so the
same configurations run on 8x8 and 16x16 inputs as well as 32x32.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.models.common import scaled_channels
from metaprune.models.registry import register_model

MAX_POOL = "M"
VGG_LAYERS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """A VGG built from a layer list: ints are conv widths, ``"M"`` is a 2x2 max-pool."""

    def __init__(self, layers: list[int | str], num_classes: int, in_channels: int, image_size: int,
                 width: float) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        channels, feature_size = in_channels, image_size
        for layer in layers:
            if layer == MAX_POOL:
                if feature_size >= 2:
                    modules.append(nn.MaxPool2d(2))
                    feature_size //= 2
                continue
            out_channels = scaled_channels(int(layer), width)
            modules += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            channels = out_channels
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> VGG:
    """VGG-11 with BatchNorm (8 conv layers)."""
    return VGG(VGG_LAYERS["vgg11"], num_classes, in_channels, image_size, width)


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> VGG:
    """VGG-16 with BatchNorm (13 conv layers)."""
    return VGG(VGG_LAYERS["vgg16"], num_classes, in_channels, image_size, width)


@register_model("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> VGG:
    """VGG-19 with BatchNorm (16 conv layers)."""
    return VGG(VGG_LAYERS["vgg19"], num_classes, in_channels, image_size, width)
