"""The pruning engine: budgets, plans, criteria, structured removal, masks, schedules, reports.

Structured dependencies come from torch-pruning, wrapped in :mod:`metaprune.prune.groups`;
nothing outside this package talks to torch-pruning.

The names below load on first use, so the light modules (``budget``, ``plan``, ``spec``) import
without torch: the command line checks its options before the engine loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaprune.prune.budget import Budget
    from metaprune.prune.criteria import CRITERIA, Criterion, get_criterion
    from metaprune.prune.plan import PATTERNS, PrunePlan
    from metaprune.prune.report import ModelFigures, PruneReport, plot_report
    from metaprune.prune.saving import load_run, save_run
    from metaprune.prune.structured import PlanPruner, StructuredPruner, apply_plan, prune_to_flops

_MODULE_OF = {
    "Budget": "budget", "CRITERIA": "criteria", "Criterion": "criteria", "get_criterion": "criteria",
    "PATTERNS": "plan", "PrunePlan": "plan", "ModelFigures": "report", "PruneReport": "report",
    "plot_report": "report", "load_run": "saving", "save_run": "saving", "PlanPruner": "structured",
    "StructuredPruner": "structured", "apply_plan": "structured", "prune_to_flops": "structured",
}

__all__ = [
    "CRITERIA", "PATTERNS", "Budget", "Criterion", "ModelFigures", "PlanPruner", "PruneReport", "PrunePlan",
    "StructuredPruner", "apply_plan", "get_criterion", "load_run", "plot_report", "prune_to_flops", "save_run",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
