"""What a command says while it runs: stage lines, progress without a terminal, --quiet/--verbose, run.log."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from cli_helpers import run_cli

from metaprune import logs
from metaprune.rundir import check_out_dir


@pytest.fixture(autouse=True)
def _default_output():
    """Each test starts (and leaves the process) at the default verbosity."""
    logs.configure(logs.NORMAL)
    yield
    logs.configure(logs.NORMAL)


@pytest.fixture(scope="module")
def tiny_prune(tmp_path_factory):
    """One small `metaprune prune` run (MLP on 8x8 digits), its stderr and its folder."""
    from metaprune.cli import main

    out = tmp_path_factory.mktemp("logged") / "run"
    stderr = io.StringIO()
    real, sys.stderr = sys.stderr, stderr
    try:
        logs.configure(logs.NORMAL)
        main(["prune", "--model", "mlp", "--image-size", "8", "--budget", "0.5", "--epochs", "2",
              "--finetune-epochs", "1", "--no-latency", "--out", str(out)])
    finally:
        sys.stderr = real
    return out, stderr.getvalue()


def test_stage_lines_and_progress_go_to_stderr_without_a_terminal(tiny_prune):
    _, stderr = tiny_prune
    lines = stderr.splitlines()
    assert any(line.startswith("training dense mlp: 2 epochs") for line in lines)
    assert any(line.startswith("pruning mlp to FLOPs ratio 0.5") for line in lines)
    assert any(line.startswith("fine-tuning: 1 epochs") for line in lines)
    assert any(line.startswith("done: FLOPs ratio") for line in lines)
    # no terminal: the training loop reports as log lines, ending with its total
    assert any(line.startswith("train mlp: done ") and "(100%)" in line for line in lines)


def test_every_run_directory_gets_a_run_log_with_the_command(tiny_prune):
    out, _ = tiny_prune
    text = (out / "run.log").read_text()
    header = text.splitlines()[0]
    assert header.startswith("---- ") and "metaprune prune --model mlp" in header
    for stage in ("training dense mlp", "train mlp: done", "pruning mlp", "fine-tuning", "done: FLOPs ratio"):
        assert stage in text, stage


def test_quiet_shows_only_the_result_and_verbose_adds_debug_lines(tmp_path, capsys):
    args = ["prune", "--model", "mlp", "--image-size", "8", "--budget", "0.5", "--epochs", "1",
            "--finetune-epochs", "0", "--no-latency"]
    code, stdout, stderr = run_cli(["--quiet", *args, "--out", str(tmp_path / "quiet")], capsys)
    assert code == 0 and stderr == ""
    assert "FLOPs speed-up" in stdout  # the result still goes to stdout
    assert "training dense mlp" in (tmp_path / "quiet" / "run.log").read_text()  # run.log keeps the stages
    code, _, stderr = run_cli(["-v", *args, "--out", str(tmp_path / "verbose")], capsys)
    assert code == 0 and "feasible: channel / group_l2 / oneshot on mlp" in stderr


def test_quiet_and_verbose_together_are_refused(capsys):
    code, _, stderr = run_cli(["--quiet", "--verbose", "info", "list"], capsys)
    assert code == 1 and stderr.strip() == "error: --quiet and --verbose contradict each other; give one"


def test_a_failed_run_logs_why_and_does_not_block_the_next_one(tmp_path, capsys, monkeypatch):
    import metaprune.workflows.prune as workflow
    from metaprune.errors import PruneError

    def fail(report):
        raise PruneError("budget missed on purpose")

    monkeypatch.setattr(workflow, "check_budget_met", fail)
    out = tmp_path / "run"
    code, _, stderr = run_cli(["prune", "--model", "mlp", "--image-size", "8", "--budget", "0.5", "--epochs", "1",
                               "--finetune-epochs", "0", "--no-latency", "--out", str(out)], capsys)
    assert code == 1 and "error: budget missed on purpose" in stderr
    assert [item.name for item in out.iterdir()] == ["run.log"]
    assert "ERROR metaprune: failed: budget missed on purpose" in (out / "run.log").read_text()
    assert check_out_dir(out) == out  # a folder holding only run.log is not a run: no --overwrite needed


def test_a_refused_command_writes_no_run_log(tmp_path, capsys):
    code, _, _ = run_cli(["prune", "--model", "mlp", "--budget", "0.5", "--pattern", "head", "--epochs", "50",
                          "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and not (tmp_path / "run").exists()


def progress_records(caplog: pytest.LogCaptureFixture, steps: int, **options) -> list[str]:
    with caplog.at_level(logging.INFO, logger="metaprune"), logs.progress_bar("work", steps, **options) as bar:
        for _ in range(steps - options.get("completed", 0)):
            bar.advance(status="fine")
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("work:")]


def test_without_a_terminal_progress_is_a_line_every_tenth_and_one_at_the_end(caplog, monkeypatch):
    monkeypatch.setattr(logs, "REPORT_MIN_SECONDS", 0.0)
    messages = progress_records(caplog, 200)
    assert [message.split(" (")[0] for message in messages] == [
        *(f"work: at {n}/200" for n in range(20, 200, 20)), "work: done 200/200"]
    assert messages[-1].startswith("work: done 200/200 (100%), fine, ")


def test_progress_lines_also_come_every_report_seconds(caplog, monkeypatch):
    monkeypatch.setattr(logs, "REPORT_SECONDS", 0.0)
    assert len(progress_records(caplog, 5)) == 5  # four while running (every call is "late") and the end


def test_a_quick_loop_says_only_done(caplog):
    assert [message.split(",")[0] for message in progress_records(caplog, 200)] == ["work: done 200/200 (100%)"]


def test_progress_resumes_from_completed_and_can_be_switched_off(caplog, monkeypatch):
    monkeypatch.setattr(logs, "REPORT_MIN_SECONDS", 0.0)
    messages = progress_records(caplog, 10, completed=6)
    assert messages[0].startswith("work: at 7/10 (70%)") and messages[-1].startswith("work: done 10/10")
    caplog.clear()
    assert progress_records(caplog, 10, enabled=False) == []


def test_track_yields_every_item_and_reports_its_length(caplog):
    with caplog.at_level(logging.INFO, logger="metaprune"):
        assert list(logs.track(range(3), "items")) == [0, 1, 2]
    assert caplog.records[-1].getMessage().startswith("items: done 3/3 (100%)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_replaces_the_lines_on_stderr_but_run_log_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "REPORT_MIN_SECONDS", 0.0)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with logs.run_log(tmp_path, header="test"), logs.progress_bar("work", 10) as bar:
        for _ in range(10):
            bar.advance()
    assert "work: at" not in terminal.getvalue() and "work: done" not in terminal.getvalue()
    text = (tmp_path / "run.log").read_text()
    assert "work: at 5/10 (50%)" in text and "work: done 10/10 (100%)" in text


def test_quiet_hides_progress_on_the_console(capsys):
    logs.configure(logs.QUIET)
    with logs.progress_bar("work", 10) as bar:
        for _ in range(10):
            bar.advance()
    assert capsys.readouterr().err == ""
