"""Ray Tune search: Optuna's TPE proposes, ASHA stops unpromising trials, trials run in parallel.

``--workers`` caps concurrent trials; ``--address`` joins an existing cluster (``ray start
--head`` on one machine, ``ray start --address=...`` on the others), otherwise a local
instance is started with ``workers`` CPUs and shut down afterwards. Each worker rebuilds the
search space from the picklable :class:`~metaprune.search.objective.SearchSetup` once per
process, projects every proposal onto the budget and reports the objective's rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaprune.errors import SearchError
from metaprune.search.allocators import get_allocator
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, best_feasible, pareto_front
from metaprune.search.objective import Objective, SearchSetup
from metaprune.search.space import SearchSpace

BASELINES = ("uniform", "erk", "global_magnitude")
_built: dict[int, tuple[SearchSpace, Objective]] = {}  # per worker process: setup id -> (space, objective)


def _param(index: int) -> str:
    return f"keep_{index}"  # Ray flattens dotted keys, so groups are addressed by position


def _trial(config: dict[str, Any], setup: SearchSetup) -> None:
    from ray import tune

    torch.set_num_threads(1)  # one core per concurrent trial
    key = id(setup)
    if key not in _built:
        _built[key] = setup.build()
    space, objective = _built[key]
    proposal = torch.tensor([config[_param(index)] for index in range(len(space))], dtype=torch.float64)
    keep_ratios = space.project(proposal)
    flops_ratio = space.flops_ratio(keep_ratios)
    for score in objective.rounds(keep_ratios):
        tune.report({"score": score, "flops_ratio": flops_ratio, "keep_ratios": keep_ratios.tolist()})


def ray_search(context: SearchContext) -> SearchResult:
    """Run ``context.trials`` trials with OptunaSearch + ASHAScheduler, at most ``context.workers`` at once."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = context.space
    started = not ray.is_initialized()
    if started:
        try:
            if context.address:
                ray.init(address=context.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=context.workers, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise SearchError(f"cannot start or join Ray ({context.address or 'local'}): {error}") from error
    try:
        baselines = [space.ratios_of_plan(get_allocator(name).allocate(space, context.setup.calibration)) for name in
                     BASELINES[: context.trials]]
        points = [{_param(i): max(float(r), float(f)) for i, (r, f) in enumerate(zip(ratios, space.floor))}
                  for ratios in baselines]
        searcher = OptunaSearch(points_to_evaluate=points, seed=context.seed)
        storage = str((context.run_dir or Path("runs")).resolve() / "ray")  # Ray wants an absolute path
        tuner = tune.Tuner(
            tune.with_parameters(_trial, setup=context.setup),
            param_space={_param(i): tune.uniform(float(floor), 1.0) for i, floor in enumerate(space.floor)},
            tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=searcher, num_samples=context.trials,
                                        max_concurrent_trials=context.workers,
                                        scheduler=ASHAScheduler(grace_period=1, reduction_factor=2)),
            run_config=tune.RunConfig(name=context.study or "metaprune-search", storage_path=storage, verbose=0),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    records = [TrialRecord(number, list(result.metrics["keep_ratios"]), float(result.metrics["flops_ratio"]),
                           float(result.metrics["score"]), "COMPLETE" if result.error is None else "FAIL", "ray")
               for number, result in enumerate(grid) if result.metrics and "score" in result.metrics]
    best = best_feasible(records, space.budget.flops_ratio)
    plan = space.to_plan(torch.tensor(best.keep_ratios, dtype=torch.float64))
    return SearchResult("ray", plan, best.score, records, pareto_front(records))
