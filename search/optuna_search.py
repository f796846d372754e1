"""Optuna search over keep ratios: TPE, CMA-ES or NSGA-II, resumable from a journal file or a database.

Every trial samples one keep ratio per group in ``[floor, 1]``, is projected onto the budget
and is scored on the projected plan (stored as the trial's ``keep_ratios`` user attribute).
The baseline allocations are enqueued as the first trials. NSGA-II also samples the FLOPs
target in ``[budget / 2, budget]`` and returns the Pareto front of score against FLOPs.

Resuming (same ``--study`` and storage) continues until the study has ``trials`` COMPLETE
trials. A killed run leaves its trial RUNNING: with the journal file (one process per study)
such trials are marked FAIL on restart and their parameters enqueued again; a database
storage (``--storage postgresql://...``, many workers) uses Optuna's heartbeats instead, so a
live worker's trial is never failed by another one.

The journal is opened by its absolute path, with a lock file that a killed writer's successor
clears after :data:`JOURNAL_LOCK_GRACE_S`; a line torn by a kill or a full disk is cut off
before the next append, and a file that is not a journal is refused. Baselines that a killed
creator never enqueued are enqueued on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import torch
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages.journal._file import LOCK_FILE_SUFFIX, get_lock_file
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError

from metaprune.errors import SearchError
from metaprune.logs import progress_bar
from metaprune.rundir import check_creatable
from metaprune.search.allocators import get_allocator
from metaprune.search.methods import (
    SAMPLERS,
    SearchContext,
    SearchResult,
    TrialRecord,
    best_feasible,
    pareto_front,
    register_method,
)

BASELINES = ("uniform", "erk", "global_magnitude", "dp")
JOURNAL = "optuna.journal"
#: A process killed while appending to the journal leaves its lock behind; a writer holds it for
#: one append (milliseconds), so after this many seconds it is stale (Optuna's default: 30).
JOURNAL_LOCK_GRACE_S = 5
#: On a shared database a worker that opens a study younger than this trusts its creator to be
#: still enqueueing the baselines; an older study missing some had its creator killed mid-way.
BASELINE_ENQUEUE_GRACE_S = 60.0
#: Seconds between a database worker's heartbeats; a trial silent for three of them is failed and retried.
HEARTBEAT_S = 30


def make_storage(context: SearchContext) -> optuna.storages.BaseStorage:
    """``--storage``: a database URL, or a journal file path; default a journal file in the run directory.

    Without a run directory the study lives in memory.
    """
    if context.storage and "://" in context.storage:
        return _database(context.storage)
    if context.storage:
        path, label = Path(context.storage), f"--storage {context.storage}"
    elif context.run_dir is not None:
        path = context.run_dir / JOURNAL
        label = str(path)
    else:
        return optuna.storages.InMemoryStorage()
    try:
        return _journal(path, label)
    except OSError as error:
        raise SearchError(f"cannot use {label} as a journal file: {error.strerror or error}") from error


def check_storage(storage: str | None) -> None:
    """SearchError unless ``--storage``, when a file path, can hold a journal; creates nothing.

    For checking the option before a dense model is trained; a database URL is checked when opened.
    """
    if storage and "://" not in storage:
        _check_journal_path(Path(storage).expanduser().resolve(), f"--storage {storage}")


def _check_journal_path(path: Path, label: str) -> None:
    """SearchError if ``path`` is a directory, lies under a file, or cannot be read and written."""
    if path.is_dir():
        raise SearchError(f"{label} is a directory; give a journal file (e.g. {path / JOURNAL}) or a database URL")
    if path.exists():
        if not path.is_file():
            raise SearchError(f"{label} is not a regular file; give a journal file or a database URL")
        if not os.access(path, os.R_OK | os.W_OK):
            raise SearchError(f"cannot use {label} as a journal file: permission denied")
    check_creatable(path, label, SearchError)


def _journal(path: Path, label: str) -> optuna.storages.BaseStorage:
    """A journal file storage at the absolute ``path``, its stale lock and torn last line cleared.

    The path is made absolute first: a relative one would follow into Optuna's lock, and a lock
    that dangles can never be found stale, so every later run would wait on it for ever.
    """
    path = path.expanduser().resolve()
    _check_journal_path(path, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_dangling_lock(path)
    lock = optuna.storages.journal.JournalFileOpenLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
    backend = optuna.storages.journal.JournalFileBackend(str(path), lock)
    try:
        with get_lock_file(lock):
            _mend_journal(path)
        storage = optuna.storages.journal.JournalStorage(backend)
        storage.get_all_studies()  # reads the whole journal now, not mid-search
        return storage
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as error:  # lines Optuna cannot replay
        raise SearchError(f"{label} is not an Optuna journal ({error}); give another --storage or --out") from error


def _clear_dangling_lock(path: Path) -> None:
    """Remove a journal lock that is a symbolic link to nowhere.

    Earlier versions locked with a symbolic link to the journal's path as given; from a relative
    path that link dangles, and Optuna, unable to read its age, retries it for ever. A live writer
    of this version never leaves such a link, so one found here was left by a killed process.
    """
    lock = path.with_name(path.name + LOCK_FILE_SUFFIX)
    if lock.is_symlink() and not lock.exists():
        lock.unlink(missing_ok=True)


def _mend_journal(path: Path) -> None:
    """Check that ``path`` is an Optuna journal, and cut off a last line without its newline.

    Optuna skips such a torn line (a writer killed mid-append, a full disk) while it is last, but
    the next append would glue onto it and the journal would stop reading there from then on. A
    bad last line *with* its newline is skipped the same way, so it is checked here. Call with the
    journal's lock held. A file that does not start like a journal is refused, never cut.

    Raises:
        ValueError: the file is not an Optuna journal.
    """
    with path.open("rb+") as journal:
        if not _JOURNAL_HEAD.startswith(journal.read(len(_JOURNAL_HEAD))):
            raise ValueError("it does not start with an Optuna operation")
        size = journal.seek(0, os.SEEK_END)
        if size and _byte_at(journal, size - 1) != b"\n":
            size = _last_newline(journal, size) + 1
            journal.truncate(size)
        if size:
            journal.seek(_last_newline(journal, size - 1) + 1)
            if not isinstance(json.loads(journal.read()), dict):
                raise ValueError("its last line is not an Optuna operation")


#: How Optuna's journal lines begin (``json.dumps`` of ``{"op_code": ..., ...}``, compact).
_JOURNAL_HEAD = b'{"op_code":'


def _byte_at(journal: BinaryIO, position: int) -> bytes:
    journal.seek(position)
    return journal.read(1)


def _last_newline(journal: BinaryIO, end: int, chunk: int = 1 << 16) -> int:
    """The position of the last newline before ``end`` in ``journal``, or -1; reads backwards."""
    while end > 0:
        start = max(0, end - chunk)
        journal.seek(start)
        found = journal.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _database(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats: a dead worker's RUNNING trial is failed, then retried once.

    Workers that start together on an empty database all create Optuna's tables; the losers of
    that race get a unique-key violation, and simply open the tables the winner made.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental; they have been stable since v2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except ImportError as error:
            raise SearchError(f"--storage {url} needs SQLAlchemy and the database driver ({error})") from error
        except IntegrityError as error:  # another worker is creating the same tables
            if attempt + 1 == attempts:
                raise SearchError(f"cannot open --storage {url}: {str(error).splitlines()[0]}") from error
            time.sleep(0.2 * (attempt + 1))
        except Exception as error:  # SQLAlchemy's errors: bad URL, unreachable server, wrong credentials
            raise SearchError(f"cannot open --storage {url}: {str(error).splitlines()[0]}") from error
    raise AssertionError("unreachable")


SAMPLERS.add("tpe", lambda seed: optuna.samplers.TPESampler(seed=seed))
SAMPLERS.add("cmaes", lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False))
SAMPLERS.add("nsga2", lambda seed: optuna.samplers.NSGAIISampler(seed=seed))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A registered sampler (TPE, CMA-ES or NSGA-II), seeded."""
    factory = SAMPLERS.get(name)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (optuna imports it lazily, mid-search)
        except ImportError as error:
            raise SearchError("--sampler cmaes needs the cmaes package: pip install cmaes") from error
    return factory(seed)


def _param(name: str) -> str:
    return f"keep:{name}"


def fail_zombies(study: optuna.Study) -> list[int]:
    """Mark trials a killed process left RUNNING as FAIL and enqueue their parameters again; their numbers.

    Only for storages without heartbeats (the journal file, one process per study): there every
    RUNNING trial at start-up belongs to a dead process. With heartbeats Optuna does this itself.
    """
    if is_heartbeat_enabled(study._storage):
        return []
    zombies = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in zombies:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        # An enqueued trial killed before its first suggestion holds its parameters as fixed_params only.
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        study.enqueue_trial(params, user_attrs={"source": trial.user_attrs.get("source", "optuna"),
                                                "retry_of": trial.number})
    return [trial.number for trial in zombies]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """The sha256 of a model's state dict (names, dtypes, shapes and bytes), in hex."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _search_config(context: SearchContext) -> dict[str, Any]:
    """What a resumed study must share with the run that created it (the dense weights included)."""
    space = context.space
    return {"budget": space.budget.flops_ratio, "cost": space.cost_kind, "objective": context.objective.name,
            "min_keep": space.min_keep, "groups": list(space.names), "dense": weights_fingerprint(context.setup.model)}


def _check_resumable(study: optuna.Study, context: SearchContext) -> None:
    """Record the search configuration in a new study; refuse to resume one made with another.

    A setting the study did not record (a study from an earlier version) is not compared.
    """
    config, stored = _search_config(context), study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", config)
        return
    changed = [key for key in config if key in stored and stored[key] != config[key]]
    if changed:
        described = {"groups": "other groups", "dense": "other dense weights"}
        details = ", ".join(described.get(key, f"{key} {stored[key]!r} now {config[key]!r}") for key in changed)
        raise SearchError(f"study {study.study_name!r} was created with other settings ({details}); "
                          "resume with the same options or choose another --study or --out")


def _missing_baselines(study: optuna.Study, context: SearchContext, created: bool) -> list[str]:
    """The baselines the study still lacks (no trial of theirs in any state); all of them for a new study.

    A run killed while enqueueing them left some out. On a shared database a study younger
    than :data:`BASELINE_ENQUEUE_GRACE_S` (or one whose creator has not yet recorded its age,
    nor any trial) may still be in its creator's hands: left alone.
    """
    wanted = list(BASELINES[: context.trials])
    if created:
        return wanted
    trials = study.get_trials(deepcopy=False)
    if is_heartbeat_enabled(study._storage):
        created_at = study.user_attrs.get("created_at")
        if created_at is None and not trials:
            return []
        if isinstance(created_at, (int, float)) and time.time() - created_at < BASELINE_ENQUEUE_GRACE_S:
            return []
    present = {trial.user_attrs.get("source") for trial in trials}
    return [name for name in wanted if name not in present]


def _enqueue_baselines(study: optuna.Study, context: SearchContext, multi_objective: bool, names: list[str]) -> None:
    space = context.space
    for name in names:
        plan = get_allocator(name).allocate(space, context.setup.calibration)
        params = {_param(group): max(float(ratio), float(floor))
                  for group, ratio, floor in zip(space.names, space.ratios_of_plan(plan), space.floor)}
        if multi_objective:
            params["flops_ratio"] = space.budget.flops_ratio
        study.enqueue_trial(params, user_attrs={"source": name})


def _objective(context: SearchContext, multi_objective: bool) -> Callable[[optuna.Trial], float | tuple[float, float]]:
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
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # many workers may share a study
        score = context.score(keep_ratios)
        return (score, flops_ratio) if multi_objective else score
    return evaluate


def _records(study: optuna.Study) -> list[TrialRecord]:
    records = []
    for trial in study.get_trials(deepcopy=False):
        if "keep_ratios" not in trial.user_attrs or "flops_ratio" not in trial.user_attrs:
            continue  # never proposed, or killed between the two writes (a failed zombie, retried)
        score = trial.values[0] if trial.values else None
        records.append(TrialRecord(trial.number, trial.user_attrs["keep_ratios"], trial.user_attrs["flops_ratio"],
                                   score, trial.state.name, trial.user_attrs.get("source", "optuna")))
    return records


def open_study(context: SearchContext) -> optuna.Study:
    """Create or resume the study of ``context`` (zombies failed and retried, missing baselines enqueued).

    The process that creates the study enqueues the baselines: creation is atomic in every
    storage, so workers that start together on one database never enqueue them twice. A resumed
    study gets the baselines its creator was killed before enqueueing (see :func:`_missing_baselines`).
    """
    multi_objective = context.sampler == "nsga2"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, storage = context.study or "metaprune-search", make_storage(context)
    directions = ["maximize", "minimize"] if multi_objective else ["maximize"]
    sampler = make_sampler(context.sampler, context.seed)
    try:
        study, created = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                             directions=directions), True
        study.set_user_attr("created_at", time.time())
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=storage, sampler=sampler), False
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise SearchError(f"cannot open study {name!r}: it was created with other directions "
                              f"({[d.name.lower() for d in study.directions]}); use the same --sampler") from None
    _check_resumable(study, context)
    fail_zombies(study)
    # A resumed run must not redraw the points of the first run: offset the seed by the trials so far.
    study.sampler = make_sampler(context.sampler, context.seed + len(study.get_trials(deepcopy=False)))
    _enqueue_baselines(study, context, multi_objective, _missing_baselines(study, context, created))
    return study


@register_method("optuna")
def optuna_search(context: SearchContext) -> SearchResult:
    """Run (or resume) an Optuna study until it has ``context.trials`` complete trials."""
    study = open_study(context)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    with progress_bar(f"optuna/{context.sampler}", context.trials, completed=complete, enabled=context.progress) as bar:

        def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = max((t.values[0] for t in done), default=None)
            bar.update(len(done), status=f"best {best:.4g}" if best is not None else "best -")

        if complete < context.trials:
            study.optimize(_objective(context, context.sampler == "nsga2"), n_trials=context.trials - complete,
                           callbacks=[MaxTrialsCallback(context.trials, states=(TrialState.COMPLETE,)), show])
    records = _records(study)
    best = best_feasible(records, context.space.budget.flops_ratio)
    plan = context.space.to_plan(torch.tensor(best.keep_ratios, dtype=torch.float64))
    return SearchResult("optuna", plan, best.score, records, pareto_front(records), study=study)
