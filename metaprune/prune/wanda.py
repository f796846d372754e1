"""Wanda (Sun et al., ICLR'24): pruning by weights and activations, without weight updates.

The score of weight ``W_ij`` is its magnitude times the L2 norm of input feature ``j`` over the
calibration tokens,

    S_ij = |W_ij| * ||X_j||_2 ,

and weights are compared *per output row* (each row loses the same fraction), or within every
group of ``m`` consecutive inputs of a row for an N:M pattern.
"""

from __future__ import annotations

import torch

from metaprune.prune.layerwise import LAYERWISE_METHODS, InputStats, SparsityTarget, lowest_mask


@LAYERWISE_METHODS.register("wanda")
def wanda(weight: torch.Tensor, stats: InputStats, target: SparsityTarget) -> torch.Tensor:
    """``weight`` with the lowest ``|W_ij| * ||X_j||`` of each row (or N:M group) set to zero."""
    norms = stats.squared_norms.sqrt().to(weight.dtype)
    scores = weight.abs() * norms.unsqueeze(0)
    return weight.masked_fill(lowest_mask(scores, target, per_row=True), 0.0)
