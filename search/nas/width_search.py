"""TAS width search on the dense network: per-group logits over candidate widths, applied by input masks.

Every prunable group :math:`g` of a :class:`~metaprune.search.space.SearchSpace` (``n_g``
coupled channels) gets candidate keep counts :math:`k_{g,1} < \\dots < k_{g,J}` and logits
:math:`\\alpha_g`. Candidate :math:`k` keeps the :math:`k` most important channels of the group
(the criterion's ranking, as :func:`~metaprune.prune.structured.apply_plan` chooses them), so
the dense network serves every width: at each consumer layer of the group, the group's input
columns, in importance order :math:`x_{(1)}, \\dots, x_{(n_g)}`, are replaced by

.. math:: \\sum_{i \\in I} w_i\\, \\mathrm{align}\\big(x_{(1:k_{g,i})},\\ n_g\\big),

with the two candidates :math:`I` and weights :math:`w` from :func:`~metaprune.search.nas.gumbel.gumbel_top2`.
With ``"pad"`` alignment this is exactly what the consumer sees after physically removing
channels; ``"interpolate"`` is TAS's channel-wise interpolation. Works for any model that
:class:`~metaprune.prune.groups.ModelGroups` traces (ResNet, VGG, MLP families).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.gumbel import CandidateLogits
from metaprune.search.nas.interpolation import ALIGNMENTS, align_channels
from metaprune.search.space import SearchSpace


def candidate_counts(space: SearchSpace, fractions: Sequence[float]) -> list[torch.Tensor]:
    """Per group, the distinct whole-channel counts of ``fractions`` clamped to ``[floor, size]``, ascending."""
    if not fractions or any(not 0.0 < float(f) <= 1.0 for f in fractions):
        raise ConfigError(f"width candidates must be fractions in (0, 1], got {list(fractions)}")
    requested = torch.tensor(sorted(float(f) for f in fractions), dtype=torch.float64)
    counts = []
    for size, floor in zip(space.sizes.tolist(), space.floor_counts.tolist()):
        counts.append(torch.unique(torch.round(requested * size).clamp(floor, size)))
    return counts


class WidthSearch(CandidateLogits):
    """Width logits of every group of ``space`` and the consumer-input hooks that apply sampled widths.

    ``importance`` maps each group name to one score per channel (higher is kept first).
    """

    def __init__(self, space: SearchSpace, importance: dict[str, torch.Tensor], fractions: Sequence[float],
                 alignment: str = "pad"):
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"unknown channel alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
        heads = [group.name for group in space.groups.groups if group.kind != "channel"]
        if heads:
            raise ConfigError(f"TAS searches channel widths of CNNs; {heads[0]!r} is an attention-head group")
        counts = candidate_counts(space, fractions)
        super().__init__([len(candidates) for candidates in counts])
        self.space, self.alignment, self.counts = space, alignment, counts
        self.sizes = [int(size) for size in space.sizes.tolist()]
        rank = {name: torch.argsort(torch.argsort(importance[name], descending=True, stable=True))
                for name in space.names}
        self.columns: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for index, group in enumerate(space.groups.groups):
            for parameter, dim, idxs, channels in space.groups.coupled_parameters(group):
                layer = parameter.rsplit(".", 1)[0]
                if dim == 1 and parameter.endswith("weight") and layer in group.in_layers:
                    order = torch.argsort(rank[group.name][channels], stable=True)
                    self._check_columns(layer, group.name, idxs.numel(), self.sizes[index])
                    self.columns.setdefault(layer, []).append((index, idxs[order]))

    def _check_columns(self, layer: str, group: str, columns: int, size: int) -> None:
        if columns % size or (self.alignment == "interpolate" and columns != size):
            raise ConfigError(f"layer {layer!r} reads {columns} columns of the {size} channels of group {group!r}; "
                              "use alignment='pad' for layers that read several columns per channel")

    def ratio_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`E[\\rho_g]` and :math:`E[\\rho_g^2]` of the keep ratio of every group (float64, differentiable)."""
        means, squares = [], []
        for probabilities, counts, size in zip(self.probabilities(), self.counts, self.sizes):
            ratios = counts / size
            means.append((probabilities.double() * ratios).sum())
            squares.append((probabilities.double() * ratios**2).sum())
        return torch.stack(means), torch.stack(squares)

    def argmax_ratios(self) -> torch.Tensor:
        """Keep ratio of the most probable candidate of every group (float64)."""
        return torch.stack([counts[int(logits.argmax())] / size
                            for logits, counts, size in zip(self.logits, self.counts, self.sizes)])

    def _mix(self, inputs: torch.Tensor, group: int, columns: torch.Tensor) -> torch.Tensor:
        per_channel = columns.numel() // self.sizes[group]
        ordered = inputs.index_select(1, columns)
        indices, weights = self.selection[group]
        mixed = 0.0
        for index, weight in zip(indices.tolist(), weights):
            kept = int(self.counts[group][index]) * per_channel
            mixed = mixed + weight.to(inputs.dtype) * align_channels(ordered[:, :kept], columns.numel(), self.alignment)
        return inputs.index_copy(1, columns, mixed)

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]:
        """Hook the consumers of every group in ``model`` (a copy of the space's model) for the duration."""
        def hook_for(parts: list[tuple[int, torch.Tensor]]):
            def mix(_module: nn.Module, args: tuple) -> tuple:
                inputs = args[0]
                for group, columns in parts:
                    inputs = self._mix(inputs, group, columns)
                return (inputs, *args[1:])
            return mix

        handles = [model.get_submodule(layer).register_forward_pre_hook(hook_for(parts))
                   for layer, parts in self.columns.items()]
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()
