"""DARTS cells: the mixed (searched) cell and the derived (discrete) cell.

A cell reads the outputs :math:`s_0, s_1` of the two previous cells (preprocessed to ``C``
channels; a factorized reduction where the cell before last halved the resolution) and
computes ``steps`` intermediate nodes. In the search cell every node sums a mixed operation
over all earlier states,

.. math:: x_i = \\sum_{j < i} \\sum_{o \\in \\mathcal{O}} \\mathrm{softmax}(\\alpha_{j \\to i})_o\\; o(x_j),

and in the derived cell two ``(operation, input)`` edges of a :class:`~metaprune.search.nas.genotype.Genotype`.
A reduction cell applies stride 2 to the edges that read :math:`s_0, s_1`. The output
concatenates the intermediate nodes (``steps * C`` channels).
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.search.nas.darts_ops import FactorizedReduce, ReLUConvBN, build_operation
from metaprune.search.nas.genotype import Edge


class CellInputs(nn.Module):
    """Preprocess the two previous cells' outputs to ``channels`` channels at this cell's input resolution."""

    def __init__(self, prev_prev_channels: int, prev_channels: int, channels: int, reduction_prev: bool,
                 affine: bool):
        super().__init__()
        self.prev_prev = (FactorizedReduce(prev_prev_channels, channels, affine) if reduction_prev
                          else ReLUConvBN(prev_prev_channels, channels, 1, 1, affine=affine))
        self.prev = ReLUConvBN(prev_channels, channels, 1, 1, affine=affine)

    def forward(self, prev_prev: torch.Tensor, prev: torch.Tensor) -> list[torch.Tensor]:
        return [self.prev_prev(prev_prev), self.prev(prev)]


class MixedOperation(nn.Module):
    """All candidate operations of one edge, summed with the edge's architecture weights."""

    def __init__(self, operations: tuple[str, ...], channels: int, stride: int, density: float):
        super().__init__()
        self.candidates = nn.ModuleList(build_operation(name, channels, stride, density, affine=False)
                                        for name in operations)

    def forward(self, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weight * operation(inputs) for weight, operation in zip(weights, self.candidates))


class SearchCell(nn.Module):
    """A cell whose every edge is a :class:`MixedOperation`; ``forward`` takes the ``edges x operations`` weights."""

    def __init__(self, operations: tuple[str, ...], steps: int, prev_prev_channels: int, prev_channels: int,
                 channels: int, reduction: bool, reduction_prev: bool, density: float):
        super().__init__()
        self.reduction, self.steps = reduction, steps
        self.inputs = CellInputs(prev_prev_channels, prev_channels, channels, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedOperation(operations, channels, 2 if reduction and source < 2 else 1, density)
            for node in range(steps) for source in range(2 + node)
        )

    def forward(self, prev_prev: torch.Tensor, prev: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = self.inputs(prev_prev, prev)
        offset = 0
        for _ in range(self.steps):
            node = sum(self.edges[offset + source](state, weights[offset + source])
                       for source, state in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class DerivedCell(nn.Module):
    """A cell of a :class:`~metaprune.search.nas.genotype.Genotype`: two fixed edges per node."""

    def __init__(self, edges: tuple[Edge, ...], prev_prev_channels: int, prev_channels: int, channels: int,
                 reduction: bool, reduction_prev: bool, density: float = 1.0):
        super().__init__()
        self.reduction, self.steps = reduction, len(edges) // 2
        self.inputs = CellInputs(prev_prev_channels, prev_channels, channels, reduction_prev, affine=True)
        self.sources = [source for _, source in edges]
        self.operations = nn.ModuleList(build_operation(name, channels, 2 if reduction and source < 2 else 1, density)
                                        for name, source in edges)

    def forward(self, prev_prev: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        states = self.inputs(prev_prev, prev)
        for node in range(self.steps):
            first, second = 2 * node, 2 * node + 1
            states.append(self.operations[first](states[self.sources[first]])
                          + self.operations[second](states[self.sources[second]]))
        return torch.cat(states[2:], dim=1)
