"""DARTS cell networks: the search network (with architecture weights) and the derived network of a genotype.

A 3x3 stem, ``layers`` cells (reduction cells, which double the channels and halve the
resolution, at one and two thirds of the depth), global average pooling and a linear
classifier. :class:`CellNetworkConfig` describes the skeleton so that a derived network can be
rebuilt from ``config + genotype`` (both plain JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.darts_cell import DerivedCell, SearchCell
from metaprune.search.nas.darts_ops import check_operations
from metaprune.search.nas.genotype import Genotype, derive_genotype


@dataclass(frozen=True)
class CellNetworkConfig:
    """Skeleton of a cell network: initial channels, cells, nodes per cell, classes and input channels."""

    channels: int = 8
    layers: int = 5
    steps: int = 3
    num_classes: int = 10
    in_channels: int = 1
    stem_multiplier: int = 3

    def __post_init__(self) -> None:
        for name in ("channels", "layers", "steps", "num_classes", "in_channels", "stem_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"cell network {name} must be a positive integer, got {value!r}")
        if self.channels % 2:
            raise ConfigError(f"cell network channels must be even (factorized reduction), got {self.channels}")

    def reductions(self) -> set[int]:
        """Indices of the reduction cells."""
        return {self.layers // 3, 2 * self.layers // 3}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON ready)."""
        return asdict(self)


CellFactory = Callable[[int, int, int, bool, bool], nn.Module]


class CellNetwork(nn.Module):
    """Stem, cells built by ``make_cell(prev_prev, prev, channels, reduction, reduction_prev)``, pooling, classifier."""

    def __init__(self, config: CellNetworkConfig, make_cell: CellFactory):
        super().__init__()
        self.config = config
        stem_channels = config.stem_multiplier * config.channels
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, stem_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem_channels))
        prev_prev, prev, channels = stem_channels, stem_channels, config.channels
        reduction_prev = False
        self.cells = nn.ModuleList()
        for index in range(config.layers):
            reduction = index in config.reductions()
            channels *= 2 if reduction else 1
            self.cells.append(make_cell(prev_prev, prev, channels, reduction, reduction_prev))
            reduction_prev = reduction
            prev_prev, prev = prev, config.steps * channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, config.num_classes)

    def run_cell(self, cell: nn.Module, prev_prev: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """One cell's output (subclasses pass architecture weights)."""
        return cell(prev_prev, prev)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        prev_prev = prev = self.stem(inputs)
        for cell in self.cells:
            prev_prev, prev = prev, self.run_cell(cell, prev_prev, prev)
        return self.classifier(torch.flatten(self.pool(prev), 1))


class SearchNetwork(CellNetwork):
    """The DARTS search network: mixed cells and architecture weights ``alpha_normal``, ``alpha_reduce``."""

    def __init__(self, config: CellNetworkConfig, operations: tuple[str, ...], density: float = 1.0):
        operations = check_operations(operations)

        def make_cell(prev_prev: int, prev: int, channels: int, reduction: bool, reduction_prev: bool) -> nn.Module:
            return SearchCell(operations, config.steps, prev_prev, prev, channels, reduction, reduction_prev, density)

        super().__init__(config, make_cell)
        self.operations = operations
        edges = sum(2 + node for node in range(config.steps))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(operations)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(operations)))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights."""
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture weights."""
        arch = {id(parameter) for parameter in self.arch_parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in arch]

    def run_cell(self, cell: nn.Module, prev_prev: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        alphas = self.alpha_reduce if cell.reduction else self.alpha_normal
        return cell(prev_prev, prev, torch.softmax(alphas, dim=-1))

    def genotype(self) -> Genotype:
        """The discrete architecture of the current weights."""
        return derive_genotype(self.alpha_normal, self.alpha_reduce, self.operations, self.config.steps)


def derived_network(config: CellNetworkConfig, genotype: Genotype, density: float = 1.0) -> CellNetwork:
    """The network of ``genotype`` on the skeleton ``config`` (sparse operations at ``density``)."""
    if genotype.steps != config.steps:
        raise ConfigError(f"genotype has {genotype.steps} nodes per cell, the skeleton {config.steps}")

    def make_cell(prev_prev: int, prev: int, channels: int, reduction: bool, reduction_prev: bool) -> nn.Module:
        edges = genotype.reduce if reduction else genotype.normal
        return DerivedCell(edges, prev_prev, prev, channels, reduction, reduction_prev, density)

    return CellNetwork(config, make_cell)
