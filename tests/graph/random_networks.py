"""Small random convolutional networks described by a plain spec, for graph round-trip tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from random_batchnorm import randomised
from torch import nn


@dataclass(frozen=True)
class BlockSpec:
    width: int
    kernel: int
    residual: bool
    norm: bool
    bias: bool
    pool: bool


@dataclass(frozen=True)
class NetworkSpec:
    in_channels: int
    image_size: int
    blocks: tuple[BlockSpec, ...]
    flatten_head: bool  # conv -> flatten -> linear (spatial weights) instead of global pooling
    hidden_features: int  # 0: no hidden linear layer in the head
    head_norm: bool
    num_classes: int


class Block(nn.Module):
    """conv-BN-ReLU, optionally a residual second conv (1x1 projection shortcut when widths differ)."""

    def __init__(self, in_channels: int, spec: BlockSpec, index: int) -> None:
        super().__init__()
        self.spec, self.index = spec, index
        padding = spec.kernel // 2
        self.conv = nn.Conv2d(in_channels, spec.width, spec.kernel, padding=padding, bias=spec.bias)
        self.norm = nn.BatchNorm2d(spec.width) if spec.norm else nn.Identity()
        if spec.residual:
            self.conv2 = nn.Conv2d(spec.width, spec.width, spec.kernel, padding=padding, bias=spec.bias)
            self.norm2 = nn.BatchNorm2d(spec.width) if spec.norm else nn.Identity()
            self.shortcut = nn.Identity() if in_channels == spec.width else nn.Conv2d(in_channels, spec.width, 1)
        self.pool = nn.MaxPool2d(2) if spec.pool and index % 2 == 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        if self.spec.residual:
            # alternate the spellings of a residual add so every one is exercised
            residual = self.norm2(self.conv2(out))
            out = torch.relu(residual + self.shortcut(x) if self.index % 2 == 0 else torch.add(residual, self.shortcut(x)))
        if self.spec.pool:
            out = self.pool(out) if self.pool is not None else F.avg_pool2d(out, 2)
        return out


class RandomNetwork(nn.Module):
    """Blocks, then global mean pooling or flatten, then an optional hidden linear layer and the classifier."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        blocks, channels, size = [], spec.in_channels, spec.image_size
        for index, block in enumerate(spec.blocks):
            blocks.append(Block(channels, block, index))
            channels, size = block.width, size // 2 if block.pool else size
        self.blocks = nn.Sequential(*blocks)
        features = channels * size * size if spec.flatten_head else channels
        head: list[nn.Module] = []
        if spec.hidden_features:
            head += [nn.Linear(features, spec.hidden_features)]
            head += [nn.BatchNorm1d(spec.hidden_features)] if spec.head_norm else []
            head += [nn.GELU()]
            features = spec.hidden_features
        self.head = nn.Sequential(*head, nn.Linear(features, spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        x = x.view(x.size(0), -1) if self.spec.flatten_head else x.mean((2, 3))
        return self.head(x)


def build_network(spec: NetworkSpec, seed: int) -> RandomNetwork:
    """The network of ``spec`` with seeded random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    return randomised(RandomNetwork(spec), seed + 1)


def example_input(spec: NetworkSpec, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size,
                       generator=torch.Generator().manual_seed(0))


block_specs = st.builds(BlockSpec, width=st.integers(1, 5), kernel=st.sampled_from([1, 3, 5]),
                        residual=st.booleans(), norm=st.booleans(), bias=st.booleans(), pool=st.booleans())


@st.composite
def network_specs(draw: st.DrawFn) -> NetworkSpec:
    """Random small architectures; pooling never shrinks the image below 1x1."""
    image_size = draw(st.sampled_from([4, 6, 8]))
    blocks, size = [], image_size
    for block in draw(st.lists(block_specs, min_size=1, max_size=3)):
        pool = block.pool and size >= 2
        blocks.append(BlockSpec(block.width, block.kernel, block.residual, block.norm, block.bias, pool))
        size = size // 2 if pool else size
    return NetworkSpec(in_channels=draw(st.integers(1, 3)), image_size=image_size, blocks=tuple(blocks),
                       flatten_head=draw(st.booleans()), hidden_features=draw(st.integers(0, 4)),
                       head_norm=draw(st.booleans()), num_classes=draw(st.integers(1, 4)))
