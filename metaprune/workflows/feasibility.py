"""Refuse a prune job that cannot work before its dense model trains, not after.

Whether a pattern fits a model (attention heads for ``--pattern head``, layers an ``n:m`` pattern
can hold), whether the criterion can be built (a ``--metanet`` that exists and loads) and whether
the pruner accepts its options depend on the architecture, not on trained weights. So
:func:`check_prune_feasible` builds the *untrained* model and the criterion and pruner on it, and
lets the same errors the job would raise after training surface in about a second.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metaprune.data import DataSplits
    from metaprune.prune.criteria import Criterion
    from metaprune.workflows.prune import PruneOptions

log = logging.getLogger(__name__)


def check_prune_feasible(options: PruneOptions, splits: DataSplits, criterion: Criterion | None = None) -> None:
    """Raise the job's own error now if ``options`` cannot prune the model of ``options.task``.

    A dry run on the *untrained* model: the criterion is built and prepares it (the metanetwork
    criterion loads ``--metanet`` and rewrites it), the pruner is built and prunes it once to the
    FLOPs budget (the same allocation and limits as after training, on other weights); nothing
    is trained or written. Dense training reseeds, so the run's results do not change.

    Raises:
        ConfigError, PruneError, BudgetError, WeightsError: the combination cannot work, e.g.
            ``--pattern head`` on a model without attention, a budget below what ``--min-keep``
            allows, ``n:m`` where no layer can hold it, a ``--metanet`` that does not exist.
    """
    from metaprune.data import calibration_batch, make_loaders
    from metaprune.prune.criteria import get_criterion
    from metaprune.prune.schedules import get_schedule
    from metaprune.train import seed_everything
    from metaprune.workflows.prune import make_pruner

    task, pruning = options.task, options.pruning
    get_schedule(pruning.schedule, steps=pruning.steps)  # an unknown name or bad --steps
    seed_everything(task.seed)
    model = task.build_model(splits).eval()
    example_input = splits.test[0][0].unsqueeze(0)
    loaders = make_loaders(splits, batch_size=options.finetune.batch_size, seed=task.seed)
    # a criterion passed in may carry state (a seeded generator): the dry run uses a copy
    criterion = copy.deepcopy(criterion) if criterion is not None else get_criterion(
        pruning.criterion, seed=task.seed, **pruning.criterion_options)
    model, _ = criterion.prepare(model, example_input, loaders)
    calibration = calibration_batch(splits, n=min(pruning.calibration_size, 32), seed=task.seed)
    pruner, _ = make_pruner(options, model, example_input, criterion, calibration)
    if options.budget is not None:  # a latency budget is measured on the trained model (and checked there)
        pruner.prune_to(model, options.budget.flops_ratio)
    log.debug("feasible: %s / %s / %s on %s", options.pattern, pruning.criterion, pruning.schedule, task.model)
