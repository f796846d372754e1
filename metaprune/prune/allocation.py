"""Non-uniform sparsity across the blocks of a layer-wise pruning run, at a fixed overall sparsity.

An *allocation* (:data:`SPARSITY_ALLOCATIONS`) turns the Wanda scores ``|W_ij| * ||X_j||_2`` of
the dense model's ``Linear`` layers, grouped by block, into one sparsity per block such that the
parameter-weighted mean is the overall target:

* ``uniform``: every block at the target.
* ``owl`` (outlier-weighted layer-wise sparsity, Yin et al., ICML'24): a block's *outlier ratio*
  ``D_b`` is the fraction of its scores above ``threshold`` times their mean (all the block's
  layers pooled). Blocks with more outliers keep more weights: the ratios are rescaled to
  ``[0, 2 * strength]`` and each block gets

      s_b = target - (D~_b - mean_w(D~)),

  so sparsities stay within ``target +- strength`` and ``sum_b n_b s_b / sum_b n_b = target``
  (``n_b`` the block's weight count, ``mean_w`` the mean weighted by ``n_b``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from metaprune.errors import ConfigError
from metaprune.registry import Registry


@dataclass(frozen=True)
class AllocationOptions:
    """How far an allocation may move a block from the target (``strength``, OWL's lambda) and the
    multiple of the mean score above which a score is an outlier (``threshold``, OWL's M)."""

    strength: float = 0.08
    threshold: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ConfigError(f"allocation strength must lie in [0, 1), got {self.strength}")
        if self.threshold <= 0.0:
            raise ConfigError(f"outlier threshold must be positive, got {self.threshold}")


#: An allocation: ``(block scores, overall sparsity, options) -> one sparsity per block``; block
#: scores are the Wanda score matrices of each block's ``Linear`` layers.
Allocation = Callable[[Sequence[Sequence[torch.Tensor]], float, AllocationOptions], list[float]]
SPARSITY_ALLOCATIONS: Registry[Allocation] = Registry("sparsity allocation")


@SPARSITY_ALLOCATIONS.register("uniform")
def uniform(block_scores: Sequence[Sequence[torch.Tensor]], sparsity: float, options: AllocationOptions) -> list[float]:
    """Every block at ``sparsity``."""
    return [float(sparsity)] * len(block_scores)


def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float) -> float:
    """Fraction of the pooled ``scores`` above ``threshold`` times their mean."""
    pooled = torch.cat([score.reshape(-1).to(torch.float64) for score in scores])
    return float((pooled > threshold * pooled.mean()).to(torch.float64).mean())


@SPARSITY_ALLOCATIONS.register("owl")
def owl(block_scores: Sequence[Sequence[torch.Tensor]], sparsity: float, options: AllocationOptions) -> list[float]:
    """OWL: blocks with a larger outlier ratio get a lower sparsity, within ``sparsity +- strength``."""
    ratios = torch.tensor([outlier_ratio(scores, options.threshold) for scores in block_scores], dtype=torch.float64)
    sizes = torch.tensor([sum(score.numel() for score in scores) for scores in block_scores], dtype=torch.float64)
    spread = ratios.max() - ratios.min()
    if spread <= 0:
        return uniform(block_scores, sparsity, options)
    scaled = (ratios - ratios.min()) / spread * 2.0 * options.strength
    weighted_mean = (scaled * sizes).sum() / sizes.sum()
    sparsities = sparsity - (scaled - weighted_mean)
    if sparsities.min() <= 0.0 or sparsities.max() >= 1.0:
        raise ConfigError(f"allocation strength {options.strength} pushes a block's sparsity out of (0, 1) "
                          f"at an overall {sparsity:.2f}: use a smaller strength")
    return [float(value) for value in sparsities]

