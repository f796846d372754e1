"""The discrete cell architecture a DARTS-style search derives: two incoming edges per node.

For node :math:`i` of a cell (inputs :math:`0, 1` are the two previous cells' outputs, node
:math:`i \\ge 2` reads every earlier state), the mixed edge :math:`(j \\to i)` has architecture
weights :math:`\\mathrm{softmax}(\\alpha_{j \\to i})`. DARTS keeps, for every node, the two
edges whose strongest operation other than ``none`` is strongest, each with that operation;
the cell output concatenates the intermediate nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metaprune.errors import ConfigError
from metaprune.search.nas.darts_ops import OPERATIONS

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cells as lists of ``(operation, input state)``, two per intermediate node."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]

    def __post_init__(self) -> None:
        for cell in (self.normal, self.reduce):
            if not cell or len(cell) % 2:
                raise ConfigError("a genotype cell needs two edges per intermediate node")
            for position, (operation, source) in enumerate(cell):
                if operation not in OPERATIONS or operation == "none":
                    raise ConfigError(f"genotype operation {operation!r} is not a known operation other than 'none'")
                if not 0 <= source < 2 + position // 2:
                    raise ConfigError(f"edge {position} reads state {source}, which is not computed before it")

    @property
    def steps(self) -> int:
        """Intermediate nodes per cell."""
        return len(self.normal) // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON ready)."""
        return {"normal": [list(edge) for edge in self.normal], "reduce": [list(edge) for edge in self.reduce]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(*(tuple((str(op), int(source)) for op, source in data[key]) for key in ("normal", "reduce")))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"a genotype needs 'normal' and 'reduce' lists of [operation, input]: {error}") from error

    def save(self, path: str | Path) -> Path:
        """Write as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Read a genotype written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def derive_cell(alphas: torch.Tensor, operations: tuple[str, ...], steps: int) -> tuple[Edge, ...]:
    """The two strongest non-``none`` edges of every node from ``alphas`` (``edges x operations``)."""
    weights = torch.softmax(alphas.detach(), dim=-1)
    usable = [index for index, name in enumerate(operations) if name != "none"]
    edges: list[Edge] = []
    start = 0
    for node in range(steps):
        inputs = 2 + node
        node_weights = weights[start:start + inputs][:, usable]
        strength, best = node_weights.max(dim=1)
        for source in sorted(torch.topk(strength, 2).indices.tolist()):
            edges.append((operations[usable[int(best[source])]], source))
        start += inputs
    return tuple(edges)


def derive_genotype(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, operations: tuple[str, ...],
                    steps: int) -> Genotype:
    """The genotype of a searched cell network's architecture weights."""
    edges = sum(2 + node for node in range(steps))
    for alphas in (alpha_normal, alpha_reduce):
        if tuple(alphas.shape) != (edges, len(operations)):
            raise ConfigError(f"architecture weights of shape {tuple(alphas.shape)} do not fit {steps} steps and "
                              f"{len(operations)} operations (expected {(edges, len(operations))})")
    return Genotype(derive_cell(alpha_normal, operations, steps), derive_cell(alpha_reduce, operations, steps))
