"""Differentiable architecture search for pruning: TAS (widths and depths) and DASS (sparse operations).

Importing this package registers the search methods ``tas`` and ``dass`` (see
:func:`metaprune.search.methods.register_method`); ``import metaprune.search`` does so.
"""

from metaprune.search.nas.darts_network import CellNetworkConfig, SearchNetwork, derived_network
from metaprune.search.nas.dass import (
    DASSConfig,
    DASSResult,
    magnitude_prune,
    run_dass,
    search_cells,
    sparse_network,
)
from metaprune.search.nas.genotype import Genotype
from metaprune.search.nas.interpolation import align_channels, channel_wise_interpolation
from metaprune.search.nas.scored_ops import ScoredConv2d, ScoredLinear, score_layers
from metaprune.search.nas.tas import (
    TASConfig,
    TASResult,
    TASSearch,
    derive_network,
    tas_search,
    train_with_distillation,
)

__all__ = [
    "CellNetworkConfig", "DASSConfig", "DASSResult", "Genotype", "ScoredConv2d", "ScoredLinear", "SearchNetwork",
    "TASConfig", "TASResult", "TASSearch", "align_channels", "channel_wise_interpolation", "derive_network",
    "derived_network", "magnitude_prune", "run_dass", "score_layers", "search_cells", "sparse_network", "tas_search",
    "train_with_distillation",
]
