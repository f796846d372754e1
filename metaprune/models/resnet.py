"""CIFAR-style ResNets (He et al., 2016, Sec. 4.2): ResNet-20/32/56.

A 3x3 stem conv, then three stages of ``n`` :class:`BasicBlock` s with ``16w, 32w, 64w``
channels (stride 1, 2, 2), global average pooling and a linear head; depth ``= 6n + 2``.
Where a block changes shape its shortcut is a 1x1 conv + BN projection ("option B"), so
every channel of every layer can be removed by structured pruning.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.models.common import scaled_channels
from metaprune.models.registry import register_model

STAGE_BASE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3x3 convs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with ``blocks_per_stage`` basic blocks in each of three stages."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int, width: float) -> None:
        super().__init__()
        stage_channels = [scaled_channels(base, width) for base in STAGE_BASE_CHANNELS]
        self.conv1 = nn.Conv2d(in_channels, stage_channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = stage_channels[0]
        for stage_index, out_channels in enumerate(stage_channels):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _blocks_per_stage(depth: int) -> int:
    return (depth - 2) // 6


# image_size is part of every constructor's signature (the registry records it in the spec);
# these convolutional nets work at any input size, so they do not use it.
@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> CifarResNet:
    """ResNet-20 (3 blocks per stage, ~0.27M parameters at width 1)."""
    return CifarResNet(_blocks_per_stage(20), num_classes, in_channels, width)


@register_model("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> CifarResNet:
    """ResNet-32 (5 blocks per stage)."""
    return CifarResNet(_blocks_per_stage(32), num_classes, in_channels, width)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: float = 1.0) -> CifarResNet:
    """ResNet-56 (9 blocks per stage)."""
    return CifarResNet(_blocks_per_stage(56), num_classes, in_channels, width)
