"""Budget-constrained per-layer allocation: search spaces, allocators, rate-distortion DP, Optuna, Ray Tune and evolution.

Every method returns a :class:`~metaprune.prune.plan.PrunePlan` whose FLOPs are within 2% of
the budget: proposals are projected onto the budget before they are evaluated. The
differentiable searches live in :mod:`metaprune.search.nas` (TAS returns such a plan; DASS
designs a new sparse cell network, see :mod:`metaprune.search.nas.dass`).
"""

from metaprune.search import evolution, nas, optuna_search, ray_tune  # noqa: F401  (register their search methods)
from metaprune.search.allocators import ALLOCATORS, Allocator, get_allocator
from metaprune.search.dp import RateDistortionAllocator, solve_rate_distortion
from metaprune.search.methods import (
    METHODS,
    SearchContext,
    SearchResult,
    TrialRecord,
    get_method,
    register_method,
)
from metaprune.search.objective import SearchSetup
from metaprune.search.space import TOLERANCE, SearchSpace

__all__ = [
    "ALLOCATORS", "METHODS", "TOLERANCE", "Allocator", "RateDistortionAllocator", "SearchContext", "SearchResult", "SearchSetup",
    "SearchSpace", "TrialRecord", "get_allocator", "get_method", "register_method", "solve_rate_distortion",
]
