"""Ray Tune search: Optuna's TPE proposes, ASHA stops unpromising trials, trials run in parallel.

``--workers`` caps concurrent trials; ``--address`` joins an existing cluster (``ray start
--head`` on one machine, ``ray start --address=...`` on the others), otherwise a local
instance is started with ``workers`` CPUs and shut down afterwards. Each worker rebuilds the
search space from the picklable :class:`~metaprune.search.objective.SearchSetup` once per
process, projects every proposal onto the budget and reports the objective's rounds.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from metaprune.errors import SearchError
from metaprune.logs import progress_bar
from metaprune.search import methods
from metaprune.search.allocators import get_allocator
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, best_feasible, pareto_front
from metaprune.search.objective import Objective, SearchSetup
from metaprune.search.space import SearchSpace

BASELINES = ("uniform", "erk", "global_magnitude")
# With reuse_actors a worker process runs many trials: it keeps the space and objective of the
# current search (by key) so that only its first trial traces the model.
_built: dict[str, tuple[SearchSpace, Objective]] = {}


class _HideTokenNotice(logging.Filter):
    """Drop Ray's notice that a local instance turned token authentication on (its secure default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_ray() -> dict[str, Any]:
    """Keep Ray's banner, INFO lines and Tune's tables off the console (metaprune reports the search itself);
    returns the options for ``ray.init``. An environment variable the user set wins."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter prints nothing at verbose=0
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # with worker logs off, nothing to summarise
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # OptunaSearch announces its in-memory study
    token_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(item, _HideTokenNotice) for item in token_logger.filters):
        token_logger.addFilter(_HideTokenNotice())
    return {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
            "logging_level": logging.WARNING}


def _param(index: int) -> str:
    return f"keep_{index}"  # Ray flattens dotted keys, so groups are addressed by position


def _space_and_objective(setup: SearchSetup, key: str) -> tuple[SearchSpace, Objective]:
    if key not in _built:
        _built.clear()
        _built[key] = setup.build()
    return _built[key]


def _trial(config: dict[str, Any], setup: SearchSetup, key: str) -> None:
    from ray import tune

    torch.set_num_threads(1)  # one core per concurrent trial
    space, objective = _space_and_objective(setup, key)
    proposal = torch.tensor([config[_param(index)] for index in range(len(space))], dtype=torch.float64)
    keep_ratios = space.project(proposal)
    flops_ratio = space.flops_ratio(keep_ratios)
    for score in objective.rounds(keep_ratios):
        tune.report({"score": score, "flops_ratio": flops_ratio, "keep_ratios": keep_ratios.tolist()})


@methods.register_method("ray")
def ray_search(context: SearchContext) -> SearchResult:
    """Run ``context.trials`` trials with OptunaSearch + ASHAScheduler, at most ``context.workers`` at once."""
    import ray

    space = context.space
    started = not ray.is_initialized()
    if started:
        try:
            if context.address:
                ray.init(address=context.address, **_quiet_ray())
            else:
                ray.init(num_cpus=context.workers, **_quiet_ray())
        except (ConnectionError, RuntimeError, ValueError) as error:
            hint = (" (clusters from `ray start` use token authentication: export RAY_AUTH_MODE=token "
                    "with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)" if context.address else "")
            raise SearchError(f"cannot start or join Ray ({context.address or 'local'}): {error}{hint}") from error
    try:
        with tempfile.TemporaryDirectory() as scratch:
            grid = _fit(context, Path(scratch) if context.run_dir is None else context.run_dir)
    finally:
        if started:
            ray.shutdown()
    records = _records(grid, context.objective.rounds_count)
    if not any(record.state == "COMPLETE" for record in records) and grid.errors:
        raise SearchError(f"every Ray trial failed; the first: {grid.errors[0]}")
    best = best_feasible(records, space.budget.flops_ratio)
    plan = space.to_plan(torch.tensor(best.keep_ratios, dtype=torch.float64))
    return SearchResult("ray", plan, best.score, records, pareto_front(records))


def _fit(context: SearchContext, run_dir: Path) -> Any:
    """Run the Tuner (baselines first) and return its ResultGrid; Ray's files go under ``run_dir/ray``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = context.space
    baselines = [space.ratios_of_plan(get_allocator(name).allocate(space, context.setup.calibration))
                 for name in BASELINES[: context.trials]]
    points = [{_param(i): max(float(r), float(f)) for i, (r, f) in enumerate(zip(ratios, space.floor))}
              for ratios in baselines]
    progress = progress_bar(f"ray/{context.workers} workers", context.trials, enabled=context.progress)
    tuner = tune.Tuner(
        tune.with_parameters(_trial, setup=context.setup, key=uuid.uuid4().hex),
        param_space={_param(i): tune.uniform(float(floor), 1.0) for i, floor in enumerate(space.floor)},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=context.trials,
                                    search_alg=OptunaSearch(points_to_evaluate=points, seed=context.seed),
                                    max_concurrent_trials=context.workers, reuse_actors=True,
                                    scheduler=ASHAScheduler(grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(name=context.study or "metaprune-search",
                                  storage_path=str(run_dir.resolve() / "ray"), verbose=0,  # Ray wants it absolute
                                  callbacks=[_trial_progress_callback(progress)]),
    )
    with progress:
        return tuner.fit()


def _trial_progress_callback(bar: Any) -> Any:
    """A Tune callback advancing ``bar`` as trials end (complete, stopped by ASHA, or failed).

    Tune pickles its run config with the experiment state: the bar stays behind (a restored
    callback reports nothing)."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.bar = bar

        def __reduce__(self) -> tuple:
            return (_no_progress_callback, ())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.bar is not None:
                self.bar.advance()

        on_trial_error = on_trial_complete

    return TrialProgress()


def _no_progress_callback() -> Any:
    return _trial_progress_callback(None)


def _records(grid: Any, rounds_count: int) -> list[TrialRecord]:
    """One record per trial that reported: COMPLETE after all rounds, PRUNED if ASHA stopped it, FAIL on error."""
    records = []
    for number, result in enumerate(grid):
        metrics = result.metrics or {}
        if "score" not in metrics:
            continue
        if result.error is not None:
            state = "FAIL"
        else:
            state = "COMPLETE" if metrics.get("training_iteration", rounds_count) >= rounds_count else "PRUNED"
        records.append(TrialRecord(number, list(metrics["keep_ratios"]), float(metrics["flops_ratio"]),
                                   float(metrics["score"]), state, "ray"))
    return records
