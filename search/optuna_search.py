"""Optuna search over keep ratios: TPE, CMA-ES or NSGA-II, resumable from a journal file or a database.

Every trial samples one keep ratio per group in ``[floor, 1]``, is projected onto the budget
and is scored on the projected plan (stored as the trial's ``keep_ratios`` user attribute).
The baseline allocations are enqueued as the first trials. NSGA-II also samples the FLOPs
target in ``[budget / 2, budget]`` and returns the Pareto front of score against FLOPs.

Resuming (same ``--study`` and storage) continues until the study has ``trials`` COMPLETE
trials: trials a killed run left RUNNING are marked FAIL first and are not counted.
"""

from __future__ import annotations

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from metaprune.errors import SearchError
from metaprune.search.allocators import get_allocator
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, best_feasible, pareto_front

BASELINES = ("uniform", "erk", "global_magnitude", "dp")
JOURNAL = "optuna.journal"


def make_storage(context: SearchContext) -> optuna.storages.BaseStorage | str:
    """The ``--storage`` URL as given, else a journal file in the run directory (in memory without one)."""
    if context.storage:
        return context.storage
    if context.run_dir is None:
        return optuna.storages.InMemoryStorage()
    context.run_dir.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(context.run_dir / JOURNAL))
    return optuna.storages.journal.JournalStorage(backend)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE, CMA-ES or NSGA-II, seeded."""
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    return samplers[name]()


def _param(name: str) -> str:
    return f"keep:{name}"


def fail_zombies(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL; returns how many."""
    zombies = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in zombies:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(zombies)


def _enqueue_baselines(study: optuna.Study, context: SearchContext, multi_objective: bool) -> None:
    space = context.space
    for name in BASELINES[: context.trials]:
        plan = get_allocator(name).allocate(space, context.setup.calibration)
        params = {_param(group): max(float(ratio), float(floor))
                  for group, ratio, floor in zip(space.names, space.ratios_of_plan(plan), space.floor)}
        if multi_objective:
            params["flops_ratio"] = space.budget.flops_ratio
        study.enqueue_trial(params, user_attrs={"source": name})


def _objective(context: SearchContext, multi_objective: bool):
    space = context.space
    budget = space.budget.flops_ratio

    def evaluate(trial: optuna.Trial) -> float | tuple[float, float]:
        proposal = torch.tensor([trial.suggest_float(_param(name), float(floor), 1.0)
                                 for name, floor in zip(space.names, space.floor)], dtype=torch.float64)
        target = trial.suggest_float("flops_ratio", budget / 2, budget) if multi_objective else budget
        keep_ratios = space.project(proposal, max(target, space.flops_ratio_of_counts(space.floor_counts)))
        flops_ratio = space.flops_ratio(keep_ratios)
        trial.set_user_attr("keep_ratios", keep_ratios.tolist())
        trial.set_user_attr("flops_ratio", flops_ratio)
        score = context.score(keep_ratios)
        return (score, flops_ratio) if multi_objective else score
    return evaluate


def _records(study: optuna.Study) -> list[TrialRecord]:
    records = []
    for trial in study.get_trials(deepcopy=False):
        if "keep_ratios" not in trial.user_attrs:
            continue
        score = trial.values[0] if trial.values else None
        records.append(TrialRecord(trial.number, trial.user_attrs["keep_ratios"], trial.user_attrs["flops_ratio"],
                                   score, trial.state.name, trial.user_attrs.get("source", "optuna")))
    return records


def optuna_search(context: SearchContext) -> SearchResult:
    """Run (or resume) an Optuna study until it has ``context.trials`` complete trials."""
    multi_objective = context.sampler == "nsga2"
    directions = ["maximize", "minimize"] if multi_objective else ["maximize"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=context.study or "metaprune-search", storage=make_storage(context),
            sampler=make_sampler(context.sampler, context.seed), directions=directions, load_if_exists=True,
        )
    except ValueError as error:  # e.g. resuming a study created with other directions
        raise SearchError(f"cannot open study {context.study!r}: {error}") from error
    fail_zombies(study)
    # A resumed run must not redraw the points of the first run: offset the seed by the trials so far.
    study.sampler = make_sampler(context.sampler, context.seed + len(study.get_trials(deepcopy=False)))
    if not study.get_trials(deepcopy=False):
        _enqueue_baselines(study, context, multi_objective)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"))
    with Progress(*columns, disable=not context.progress, transient=True) as bar:
        task = bar.add_task(f"optuna/{context.sampler}", total=context.trials, completed=complete, best="-")

        def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = max((t.values[0] for t in done), default=None)
            bar.update(task, completed=len(done), best=f"{best:.4g}" if best is not None else "-")

        if complete < context.trials:
            study.optimize(_objective(context, multi_objective), n_trials=context.trials - complete,
                           callbacks=[MaxTrialsCallback(context.trials, states=(TrialState.COMPLETE,)), show])
    records = _records(study)
    best = best_feasible(records, context.space.budget.flops_ratio)
    plan = context.space.to_plan(torch.tensor(best.keep_ratios, dtype=torch.float64))
    return SearchResult("optuna", plan, best.score, records, pareto_front(records))
