"""Hardware-friendly channel counts: round every group's kept channels to a multiple (``--round-to 8``).

Vectorised CPU and GPU kernels work on 8 or 16 channels at a time, so a layer with 21 channels
costs about what one with 24 costs. :func:`round_counts` moves each group's keep count to the
nearest multiple of ``round_to`` (in whole channel steps; a group narrower than one multiple, or
kept whole, is left alone), then repairs the budget: while the cost is above the target it takes
one multiple from the group that rounding enlarged most, and while a group rounded down can get a
multiple back within the target it gives it back. The allocator's preferences survive, only
snapped to the grid.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from metaprune.errors import ConfigError

if TYPE_CHECKING:  # PruningSpec checks --round-to with this module before torch loads (a fast CLI refusal)
    import torch


def check_round_to(round_to: int) -> None:
    """ConfigError unless ``round_to`` is a whole number in [1, 1024]."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or not 1 <= round_to <= 1024:
        raise ConfigError(f"--round-to must be a whole number in [1, 1024], got {round_to!r}")


def _allowed(size: int, floor: int, unit: int) -> list[int]:
    """Counts a group may keep: multiples of ``unit`` from ``floor`` up, and the whole group."""
    lowest = max(unit, math.ceil(floor / unit) * unit)
    return sorted({*range(lowest, size + 1, unit), size})


def round_counts(counts: torch.Tensor, sizes: torch.Tensor, floor: torch.Tensor, steps: torch.Tensor,
                 round_to: int, cost: Any, target: float) -> torch.Tensor:
    """``counts`` rounded to multiples of ``round_to`` (and of each group's step), with ``cost.flops`` kept
    at or under ``target`` where the grid allows it (else as close above as the floors allow)."""
    import torch

    check_round_to(round_to)
    if round_to == 1:
        return counts
    wanted = counts.to(torch.float64)
    allowed = []
    for size, low, step, want in zip(sizes.tolist(), floor.tolist(), steps.tolist(), wanted.tolist()):
        unit = math.lcm(round_to, int(step))
        allowed.append(_allowed(int(size), int(low), unit) if size >= unit else [int(want)])
    rounded = torch.tensor([float(min(options, key=lambda value: (abs(value - want), value)))
                            for options, want in zip(allowed, wanted.tolist())], dtype=torch.float64)

    def neighbour(index: int, direction: int) -> float | None:
        options = allowed[index]
        position = options.index(int(rounded[index])) + direction
        return float(options[position]) if 0 <= position < len(options) else None

    while cost.flops(rounded) > target:
        lower = [(float(rounded[i] - wanted[i]), i) for i in range(len(rounded)) if neighbour(i, -1) is not None]
        if not lower:
            break
        _, index = max(lower)
        rounded[index] = neighbour(index, -1)
    while True:  # give back multiples, the most rounded-down group first, while the target holds
        for index in sorted(range(len(rounded)), key=lambda i: float(rounded[i] - wanted[i])):
            value = neighbour(index, +1)
            if value is None:
                continue
            trial = rounded.clone()
            trial[index] = value
            if cost.flops(trial) <= target:
                rounded = trial
                break
        else:
            return rounded
