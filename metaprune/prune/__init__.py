"""The pruning engine: budgets, plans, criteria, structured removal, masks, schedules, reports.

Structured dependencies come from torch-pruning, wrapped in :mod:`metaprune.prune.groups`;
nothing outside this package talks to torch-pruning.
"""

from metaprune.prune.budget import Budget
from metaprune.prune.criteria import CRITERIA, Criterion, get_criterion
from metaprune.prune.plan import PATTERNS, PrunePlan
from metaprune.prune.report import ModelFigures, PruneReport, plot_report
from metaprune.prune.saving import load_run, save_run
from metaprune.prune.structured import PlanPruner, StructuredPruner, apply_plan, prune_to_flops

__all__ = [
    "CRITERIA", "PATTERNS", "Budget", "Criterion", "ModelFigures", "PlanPruner", "PruneReport", "PrunePlan",
    "StructuredPruner", "apply_plan", "get_criterion", "load_run", "plot_report", "prune_to_flops", "save_run",
]
