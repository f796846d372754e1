"""Candidate operations of the DARTS cell search space (Liu et al., ICLR'19), plus DASS's sparse ones.

Every operation maps ``C`` channels to ``C`` channels with a given stride. The usual DARTS
set is kept (zero, skip, pooling, separable and dilated convolutions); DASS adds parametric
operations whose convolutions are :class:`~metaprune.search.nas.scored_ops.ScoredConv2d` at the
target density, so that the search can prefer operations that stay accurate when sparse.
To fit a CPU budget, separable convolutions are a single depthwise-pointwise stack.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.scored_ops import ScoredConv2d


def _conv(sparse_density: float | None, *args: object, **kwargs: object) -> nn.Conv2d:
    if sparse_density is None:
        return nn.Conv2d(*args, **kwargs)  # type: ignore[arg-type]
    return ScoredConv2d(*args, density=sparse_density, **kwargs)  # type: ignore[arg-type]


class ReLUConvBN(nn.Sequential):
    """ReLU, a ``kernel x kernel`` convolution (dilated, optionally sparse), BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, dilation: int = 1,
                 density: float | None = None, affine: bool = True):
        padding = dilation * (kernel - 1) // 2
        super().__init__(nn.ReLU(inplace=False),
                         _conv(density, in_channels, out_channels, kernel, stride=stride, padding=padding,
                               dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels, affine=affine))


class SepConv(nn.Sequential):
    """ReLU, depthwise ``kernel x kernel`` (optionally dilated), pointwise 1x1, BatchNorm."""

    def __init__(self, channels: int, kernel: int, stride: int, dilation: int = 1, affine: bool = True):
        padding = dilation * (kernel - 1) // 2
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(channels, channels, kernel, stride=stride, padding=padding, dilation=dilation,
                                   groups=channels, bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False),
                         nn.BatchNorm2d(channels, affine=affine))


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs[:, :, ::self.stride, ::self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convolutions, concatenated (DARTS)."""

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True):
        super().__init__()
        if out_channels % 2:
            raise ConfigError(f"FactorizedReduce needs an even number of output channels, got {out_channels}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = self.relu(inputs)
        odd = nn.functional.pad(inputs[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_even(inputs), self.conv_odd(odd)], dim=1))


def _pool(kind: str, channels: int, stride: int, affine: bool) -> nn.Module:
    pool = nn.MaxPool2d(3, stride, padding=1) if kind == "max" else nn.AvgPool2d(3, stride, padding=1,
                                                                                  count_include_pad=False)
    return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=affine))


OpBuilder = Callable[[int, int, float, bool], nn.Module]

#: name → builder(channels, stride, density, affine); density is used by the sparse operations only.
OPERATIONS: dict[str, OpBuilder] = {
    "none": lambda c, stride, density, affine: Zero(stride),
    "skip_connect": lambda c, stride, density, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "max_pool_3x3": lambda c, stride, density, affine: _pool("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, density, affine: _pool("avg", c, stride, affine),
    "sep_conv_3x3": lambda c, stride, density, affine: SepConv(c, 3, stride, affine=affine),
    "dil_conv_3x3": lambda c, stride, density, affine: SepConv(c, 3, stride, dilation=2, affine=affine),
    "conv_3x3": lambda c, stride, density, affine: ReLUConvBN(c, c, 3, stride, affine=affine),
    "sparse_conv_3x3": lambda c, stride, density, affine: ReLUConvBN(c, c, 3, stride, density=density, affine=affine),
    "sparse_dil_conv_3x3": lambda c, stride, density, affine: ReLUConvBN(c, c, 3, stride, dilation=2, density=density,
                                                                         affine=affine),
}

#: The DARTS candidate set (``conv_3x3`` is the dense counterpart of the sparse convolutions).
DARTS_OPERATIONS = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_3x3", "conv_3x3")
#: DASS: the DARTS set plus the sparse parametric operations.
DASS_OPERATIONS = (*DARTS_OPERATIONS, "sparse_conv_3x3", "sparse_dil_conv_3x3")


def build_operation(name: str, channels: int, stride: int, density: float = 1.0, affine: bool = True) -> nn.Module:
    """The operation ``name`` on ``channels`` channels with ``stride`` (sparse ones at ``density``)."""
    if name not in OPERATIONS:
        raise ConfigError(f"unknown cell operation {name!r}; choose from {', '.join(OPERATIONS)}")
    return OPERATIONS[name](channels, stride, density, affine)


def check_operations(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``names`` as a tuple if every one is known and one is not ``none``, else ConfigError."""
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown or not [name for name in names if name != "none"]:
        raise ConfigError(f"cell operations must be known names, at least one not 'none'; got {list(names)} "
                          f"(known: {', '.join(OPERATIONS)})")
    return tuple(names)
