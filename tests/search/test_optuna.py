"""Optuna search: baselines first, every trial on budget, journal storage, resume, NSGA-II's Pareto front."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from search_helpers import calibration, small_model

from metaprune.errors import SearchError
from metaprune.prune.budget import Budget
from metaprune.search import TOLERANCE, SearchContext, SearchSetup, get_allocator
from metaprune.search import optuna_search as optuna_module
from metaprune.search.optuna_search import BASELINES, JOURNAL, check_storage, open_study, optuna_search


def make_context(run_dir, budget: float = 0.5, **options) -> SearchContext:
    """A distortion-objective search on ResNet-20 (width 0.5, 8x8) with a run directory."""
    model, example_input = small_model("resnet20")
    setup = SearchSetup(model, example_input, Budget(budget), calibration())
    return SearchContext.from_setup(setup, run_dir=run_dir, progress=False, **options)


def journal_study(run_dir, name: str = "metaprune-search") -> optuna.Study:
    storage = optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL)))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def tpe_run(tmp_path_factory):
    """Ten TPE trials with a journal in the run directory."""
    run_dir = tmp_path_factory.mktemp("tpe")
    context = make_context(run_dir, trials=10)
    return run_dir, context, optuna_search(context)


def test_baseline_allocations_are_the_first_trials(tpe_run):
    _, context, result = tpe_run
    assert [trial.source for trial in result.trials[: len(BASELINES)]] == list(BASELINES)
    for trial, name in zip(result.trials, BASELINES):
        plan = get_allocator(name).allocate(context.space, context.setup.calibration)
        assert trial.keep_ratios == context.space.ratios_of_plan(plan).tolist(), name


def test_every_trial_is_on_budget_and_the_best_is_returned(tpe_run):
    _, context, result = tpe_run
    assert [trial.number for trial in result.trials] == list(range(10))
    assert all(trial.state == "COMPLETE" for trial in result.trials)
    assert all(abs(trial.flops_ratio - 0.5) <= TOLERANCE * 0.5 for trial in result.trials)
    assert result.best_score == max(trial.score for trial in result.trials)
    best = max(result.trials, key=lambda trial: trial.score)
    assert context.space.ratios_of_plan(result.best_plan).tolist() == best.keep_ratios


def test_the_study_is_a_journal_file_in_the_run_directory(tpe_run):
    run_dir, _, result = tpe_run
    study = journal_study(run_dir)
    assert [trial.number for trial in study.trials] == [trial.number for trial in result.trials]
    assert study.user_attrs["search"]["budget"] == 0.5


def test_a_finished_study_resumes_to_more_trials_without_touching_the_old_ones(tpe_run):
    run_dir, _, first = tpe_run
    more = optuna_search(make_context(run_dir, trials=13))
    assert [trial.number for trial in more.trials] == list(range(13))
    assert [(t.keep_ratios, t.score) for t in more.trials[:10]] == [(t.keep_ratios, t.score) for t in first.trials]
    assert [trial.source for trial in more.trials[10:]] == ["optuna"] * 3


def test_resuming_with_another_budget_is_refused(tpe_run):
    run_dir, *_ = tpe_run
    with pytest.raises(SearchError, match="budget 0.5 now 0.4"):
        optuna_search(make_context(run_dir, budget=0.4, trials=12))


def test_a_trial_left_running_is_failed_and_retried(tmp_path):
    context = make_context(tmp_path, trials=5)
    orphan = open_study(context).ask()  # what a killed process leaves behind: the first baseline, RUNNING
    assert orphan.user_attrs["source"] == "uniform"
    optuna_search(context)
    trials = journal_study(tmp_path).trials
    retried = [trial for trial in trials if trial.user_attrs.get("retry_of") == orphan.number]
    assert trials[orphan.number].state == TrialState.FAIL
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs["source"] == "uniform" and retried[0].params == trials[orphan.number].system_attrs["fixed_params"]
    assert [trial.state for trial in trials].count(TrialState.COMPLETE) == 5


def test_nsga2_returns_a_pareto_front_of_score_against_flops(tmp_path):
    result = optuna_search(make_context(tmp_path, trials=16, sampler="nsga2"))
    front = result.pareto
    assert len(front) >= 2
    assert [t.flops_ratio for t in front] == sorted(t.flops_ratio for t in front)
    assert [t.score for t in front] == sorted(t.score for t in front)  # more FLOPs buys less distortion
    done = [t for t in result.trials if t.state == "COMPLETE"]
    for point in front:
        assert not any(t.score > point.score and t.flops_ratio < point.flops_ratio for t in done)
    assert min(t.flops_ratio for t in done) < 0.4  # the FLOPs target itself is searched in [budget/2, budget]
    assert result.best_plan.flops_ratio <= 0.5 * (1 + TOLERANCE)


def test_cmaes_searches_on_budget(tmp_path):
    result = optuna_search(make_context(tmp_path, trials=8, sampler="cmaes"))
    assert sum(trial.state == "COMPLETE" for trial in result.trials) == 8
    assert all(abs(trial.flops_ratio - 0.5) <= TOLERANCE * 0.5 for trial in result.trials)


def test_without_a_run_directory_the_study_is_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = optuna_search(make_context(None, trials=5))
    assert len(result.trials) == 5 and not list(tmp_path.iterdir())


def test_an_unreachable_database_is_one_search_error(tmp_path):
    context = make_context(tmp_path, trials=5, storage=f"sqlite:///{tmp_path}/missing/dir/study.db")
    with pytest.raises(SearchError, match="cannot open --storage"):
        optuna_search(context)


@pytest.mark.parametrize("seed", [0, 1])
def test_search_is_deterministic(tmp_path, seed):
    first, again = (optuna_search(make_context(tmp_path / str(run), trials=7, seed=seed)) for run in range(2))
    assert [(t.keep_ratios, t.score) for t in first.trials] == [(t.keep_ratios, t.score) for t in again.trials]


def test_resuming_with_other_directions_is_one_search_error(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    optuna_search(make_context(tmp_path, trials=4, storage=url, study="db"))
    with pytest.raises(SearchError, match="other directions"):
        optuna_search(make_context(tmp_path, trials=6, storage=url, study="db", sampler="nsga2"))


def test_a_database_storage_runs_and_resumes(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    optuna_search(make_context(tmp_path, trials=5, storage=url, study="db"))
    resumed = optuna_search(make_context(tmp_path, trials=7, storage=url, study="db"))
    assert [trial.number for trial in resumed.trials] == list(range(7))
    assert not (tmp_path / JOURNAL).exists()


def _study_trials(run_dir, name: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of a study another process is writing (none before it has created the study)."""
    if not (run_dir / JOURNAL).is_file():
        return []
    try:
        return journal_study(run_dir, name).trials
    except KeyError:
        return []


def test_a_killed_search_resumes_with_no_lost_or_duplicated_trials(tmp_path):
    """Killed mid-trial, with a relative --out and the journal lock a kill mid-append leaves: the rerun completes."""
    trials, run_dir = 24, tmp_path / "run"
    command = [sys.executable, "-m", "metaprune.cli", "search", "--budget", "0.5", "--model", "resnet20", "--epochs", "1",
               "--method", "optuna", "--objective", "distortion", "--trials", str(trials), "--study", "s",
               "--out", "run", "--no-progress"]  # relative to cwd: a lock's relative target once dangled
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, env=environment, stdout=log, stderr=log, cwd=tmp_path)
        try:  # SIGKILL once 6 trials are complete: nearly always in the middle of the next one
            deadline = time.monotonic() + 90
            while sum(t.state == TrialState.COMPLETE for t in _study_trials(run_dir, "s")) < 6:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "the first run never completed 6 trials"
                time.sleep(0.1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    before = _study_trials(run_dir, "s")
    done_before = {t.number: (t.params, t.values) for t in before if t.state == TrialState.COMPLETE}
    zombies = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(done_before) < trials
    lock = run_dir / f"{JOURNAL}.lock"
    if not lock.exists():  # what a kill during an append leaves (the kill above nearly always lands mid-trial)
        lock.touch()

    started = time.monotonic()
    second = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 100 and not lock.exists()

    after = _study_trials(run_dir, "s")
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert [t.number for t in after] == list(range(len(after)))  # consecutive, no duplicates
    assert len(complete) == trials
    assert {t.number: (t.params, t.values) for t in after if t.number in done_before} == done_before  # none lost
    assert len({tuple(sorted(t.params.items())) for t in complete}) == trials  # no point evaluated twice
    sources = [t.user_attrs.get("source", "optuna") for t in complete]
    assert sorted(source for source in sources if source != "optuna") == sorted(BASELINES)
    for number in zombies:  # the trial the kill interrupted failed, and ran again
        assert after[number].state == TrialState.FAIL
        assert [t.state for t in after if t.user_attrs.get("retry_of") == number] == [TrialState.COMPLETE]
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    rows = (run_dir / "trials.csv").read_text().splitlines()[1:]
    assert sum(",COMPLETE," in row for row in rows) == trials


def test_a_trial_killed_between_its_attribute_writes_is_left_out_of_the_records():
    from metaprune.search.optuna_search import _records

    study = optuna.create_study()
    killed = study.ask()
    killed.set_user_attr("keep_ratios", [0.5])  # the process died before flops_ratio was written
    study.tell(killed, state=TrialState.FAIL)
    done = study.ask()
    done.set_user_attr("keep_ratios", [0.6])
    done.set_user_attr("flops_ratio", 0.5)
    study.tell(done, 1.0)
    assert [(record.number, record.state) for record in _records(study)] == [(1, "COMPLETE")]


def _complete(run_dir) -> list[optuna.trial.FrozenTrial]:
    return [trial for trial in journal_study(run_dir).trials if trial.state == TrialState.COMPLETE]


@pytest.mark.timeout(60)
def test_a_dangling_relative_lock_left_by_a_kill_does_not_stop_the_rerun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = Path("runs/s1")
    optuna_search(make_context(run_dir, trials=3))
    lock = run_dir / f"{JOURNAL}.lock"
    os.symlink(str(run_dir / JOURNAL), lock)  # what a kill mid-append left: runs/s1/optuna.journal.lock -> runs/s1/...
    assert lock.is_symlink() and not lock.exists()  # relative to the link's folder: it dangles
    started = time.monotonic()
    resumed = optuna_search(make_context(run_dir, trials=5))
    assert time.monotonic() - started < 30
    assert sum(trial.state == "COMPLETE" for trial in resumed.trials) == 5 and not lock.is_symlink()


@pytest.mark.timeout(60)
def test_a_stale_lock_file_is_cleared_after_the_grace_period(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optuna_module, "JOURNAL_LOCK_GRACE_S", 3)
    optuna_search(make_context(Path("run"), trials=2))
    lock = tmp_path / "run" / f"{JOURNAL}.lock"
    lock.touch()  # a writer killed while holding the lock
    started = time.monotonic()
    optuna_search(make_context(Path("run"), trials=4))
    assert 3 <= time.monotonic() - started < 30 and not lock.exists()
    assert len(_complete(tmp_path / "run")) == 4


def test_a_line_torn_by_a_kill_is_cut_before_the_next_append(tmp_path):
    optuna_search(make_context(tmp_path, trials=3))
    journal = tmp_path / JOURNAL
    intact = journal.read_bytes()
    with journal.open("ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 2, "us')  # the kill came mid-write
    optuna_search(make_context(tmp_path, trials=5))
    assert journal.read_bytes().startswith(intact) and journal.read_bytes().endswith(b"\n")
    assert len(_complete(tmp_path)) == 5  # the whole journal reads back


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _kill_after_enqueueing(monkeypatch, count: int) -> None:
    calls, enqueue = [], optuna.Study.enqueue_trial

    def enqueue_then_die(study, *args, **kwargs):
        if len(calls) == count:
            raise _Killed
        calls.append(1)
        return enqueue(study, *args, **kwargs)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_then_die)


def test_baselines_a_killed_creator_never_enqueued_run_on_resume(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        _kill_after_enqueueing(patch, 2)
        with pytest.raises(_Killed):
            optuna_search(make_context(tmp_path, trials=6))
    assert [t.user_attrs["source"] for t in journal_study(tmp_path).trials] == list(BASELINES[:2])
    optuna_search(make_context(tmp_path, trials=6))
    sources = sorted(trial.user_attrs.get("source", "optuna") for trial in _complete(tmp_path))
    assert sources == sorted([*BASELINES, "optuna", "optuna"])  # dp and global_magnitude ran, each once


def test_on_a_database_missing_baselines_wait_for_a_young_study_s_creator(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/study.db"
    with monkeypatch.context() as patch:
        _kill_after_enqueueing(patch, 1)
        with pytest.raises(_Killed):
            optuna_search(make_context(tmp_path, trials=5, storage=url, study="db"))

    def sources() -> list[str]:
        trials = optuna.load_study(study_name="db", storage=url).trials
        return sorted(trial.user_attrs.get("source", "optuna") for trial in trials)
    open_study(make_context(tmp_path, trials=5, storage=url, study="db"))  # its creator may still be enqueueing
    assert sources() == ["uniform"]
    monkeypatch.setattr(optuna_module, "BASELINE_ENQUEUE_GRACE_S", 0.0)  # ... not any more: it was killed
    optuna_search(make_context(tmp_path, trials=5, storage=url, study="db"))
    assert sources() == sorted([*BASELINES, "optuna"])


def test_resuming_on_other_dense_weights_is_refused(tmp_path):
    optuna_search(make_context(tmp_path, trials=4))
    other = make_context(tmp_path, trials=6)
    with torch.no_grad():
        next(other.setup.model.parameters()).add_(1.0)
    with pytest.raises(SearchError, match="other dense weights"):
        optuna_search(other)


@pytest.mark.parametrize("case", ["directory", "under a file", "not a journal", "no newline"])
def test_a_storage_that_cannot_hold_a_journal_is_one_search_error(tmp_path, case):
    text = "precious" if case == "no newline" else "not a journal\n"  # never cut as a torn line
    (tmp_path / "file").write_text(text)
    storage = {"directory": tmp_path, "under a file": tmp_path / "file" / "study.journal"}.get(case, tmp_path / "file")
    expected = {"directory": "is a directory", "under a file": "is not a directory"}.get(case, "not an Optuna journal")
    with pytest.raises(SearchError, match=expected) as error:
        optuna_search(make_context(tmp_path / "run", trials=2, storage=str(storage)))
    assert str(storage) in str(error.value) and "\n" not in str(error.value)
    assert (tmp_path / "file").read_text() == text
    if case in ("directory", "under a file"):
        with pytest.raises(SearchError, match=expected):
            check_storage(str(storage))  # checked before any training, too


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_storage_is_one_search_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SearchError, match="not writable"):
        optuna_search(make_context(tmp_path / "run", trials=2, storage=str(locked / "study.journal")))
