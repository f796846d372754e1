"""What a job says while it runs: the ``metaprune`` logger, its run.log, and progress.

Every module logs through ``logging.getLogger(__name__)`` (a child of the ``metaprune`` logger);
nothing is printed unless an application configures logging. The command line does, with
:func:`configure`: stage lines (``training dense model``, ``pruning``, ``done: ...``) go to stderr
at INFO (``--quiet``: warnings only, ``--verbose``: DEBUG), and :func:`run_log` appends every
record of a job to ``run.log`` in its run directory.

Long loops report through :func:`progress_bar` (or :func:`track`): on a terminal a rich bar on
stderr; otherwise (a pipe, a log file, a batch job) a log line every :data:`REPORT_FRACTION` of the
work (at most one per :data:`REPORT_MIN_SECONDS`) or every :data:`REPORT_SECONDS`, and a last
line with the total, so a redirected run still shows that it is alive. The lines
always reach ``run.log``. This module imports neither torch nor rich until a bar is drawn.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from metaprune.rundir import RUN_LOG_FILE

LOGGER_NAME = "metaprune"
#: Without a terminal, a progress line every this fraction of the work ...
REPORT_FRACTION = 0.1
#: ... but not sooner than this many seconds after the previous one (a short loop says only "done") ...
REPORT_MIN_SECONDS = 5.0
#: ... and at least every this many seconds.
REPORT_SECONDS = 30.0
#: Verbosity levels of :func:`configure`: ``--quiet``, default, ``--verbose``.
QUIET, NORMAL, VERBOSE = -1, 0, 1

_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PROGRESS = "metaprune_progress"  # attribute of a progress record: the console drops it while a bar is drawn

T = TypeVar("T")
logger = logging.getLogger(LOGGER_NAME)
_state: dict[str, Any] = {"bars": True, "console": None}


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stderr`` (swapped by pytest, rich or a caller)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _DropProgressOnTerminal(logging.Filter):
    """Progress lines go to the console only when no bar shows them (stderr is not a terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, _PROGRESS, False) and _bars_visible())


class _RunLogHandler(logging.FileHandler):
    """Appends to ``run.log``; the file (and its folder) is created by the first record, not before,
    so a job refused by its checks leaves nothing behind."""

    def __init__(self, path: Path, header: str) -> None:
        self.header = header
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        stream.write(f"---- {datetime.now().isoformat(timespec='seconds')} {self.header}\n")
        return stream


def configure(verbosity: int = NORMAL) -> None:
    """Send the ``metaprune`` logger's records to stderr at the level of ``verbosity``.

    ``QUIET`` shows warnings only and no progress bars; ``VERBOSE`` shows DEBUG records.
    Calling it again replaces the previous console handler (tests run many commands in one process).
    """
    level = _LEVELS[max(QUIET, min(VERBOSE, verbosity))]
    if _state["console"] is not None:
        logger.removeHandler(_state["console"])
    handler = _StderrHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_DropProgressOnTerminal())
    logger.addHandler(handler)
    _state.update(console=handler, bars=verbosity > QUIET)
    _update_level()


def _update_level() -> None:
    """The logger passes what its most talkative handler shows (without handlers of its own: the root's choice)."""
    levels = [handler.level for handler in logger.handlers if handler.level]
    logger.setLevel(min(levels) if levels else logging.NOTSET)


@contextmanager
def run_log(run_dir: str | Path | None, header: str = "") -> Iterator[Path | None]:
    """Append the job's records (INFO and above, DEBUG too when the console shows them) to
    ``run_dir/run.log`` while the block runs; ``header`` (e.g. the command) starts its section.

    With ``run_dir`` None nothing is written. The file appears with the first record.
    """
    if run_dir is None:
        yield None
        return
    path = Path(run_dir) / RUN_LOG_FILE
    handler = _RunLogHandler(path, header)
    console = _state["console"]
    handler.setLevel(min(logging.INFO, console.level if console is not None else logging.INFO))
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    _update_level()
    try:
        yield path
    except BaseException as error:
        if handler.stream is not None and not isinstance(error, SystemExit | KeyboardInterrupt):
            # in run.log beside what led to it; the console prints its own `error:` line
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "failed: %s", (error,), None))
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        _update_level()


def _bars_visible() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(_state["bars"] and isatty is not None and isatty())


class ProgressBar:
    """Progress of one loop: a rich bar on a terminal, periodic log lines otherwise.

    Use :func:`progress_bar` to make one; call :meth:`advance` as work is done.
    """

    def __init__(self, description: str, total: int | None, completed: int = 0, *, enabled: bool = True) -> None:
        self.description, self.total, self.completed = description, total, completed
        self.status = ""
        self.enabled = enabled
        self._started = self._last_time = time.monotonic()
        self._last_fraction = self._fraction()
        self._rich: Any = None
        self._task: Any = None

    def _fraction(self) -> float:
        return self.completed / self.total if self.total else 0.0

    def __enter__(self) -> ProgressBar:
        if self.enabled and _bars_visible():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[status]}"), TimeRemainingColumn())
            self._rich = Progress(*columns, console=Console(stderr=True), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, completed=self.completed, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None
        if exc[0] is None and self.enabled and self.total:
            self._log(final=True)

    def advance(self, steps: int = 1, status: str | None = None) -> None:
        """Count ``steps`` more units of work done; ``status`` (e.g. ``"loss 0.123"``) is shown beside the bar."""
        self.update(self.completed + steps, status)

    def update(self, completed: int | None = None, status: str | None = None) -> None:
        """Set the units done (``completed``) and/or the ``status`` text."""
        if completed is not None:
            self.completed = completed
        if status is not None:
            self.status = status
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, status=self.status)
        now = time.monotonic()
        fraction = self._fraction()
        waited = now - self._last_time
        if (fraction - self._last_fraction >= REPORT_FRACTION - 1e-9 and waited >= REPORT_MIN_SECONDS) \
                or waited >= REPORT_SECONDS:
            if fraction < 1.0:  # the end is reported once, on leaving the block
                self._log()

    def _log(self, final: bool = False) -> None:
        self._last_time, self._last_fraction = time.monotonic(), self._fraction()
        elapsed = self._last_time - self._started
        done = f"{self.completed}/{self.total}" if self.total else str(self.completed)
        percent = f" ({self._fraction():.0%})" if self.total else ""
        status = f", {self.status}" if self.status else ""
        word = "done" if final else "at"
        logger.info("%s: %s %s%s%s, %.0f s", self.description, word, done, percent, status, elapsed,
                    extra={_PROGRESS: True})


def progress_bar(description: str, total: int | None, *, completed: int = 0, enabled: bool = True) -> ProgressBar:
    """A :class:`ProgressBar` over ``total`` units of work (``completed`` of them already done, as when
    a job resumes); use it as a context manager. ``enabled=False`` shows nothing and logs nothing.

    ::

        with progress_bar("train resnet20", total=steps) as bar:
            for step in range(steps):
                ...
                bar.advance(status=f"loss {loss:.3f}")
    """
    return ProgressBar(description, total, completed, enabled=enabled)


def track(items: Iterable[T], description: str, *, total: int | None = None, completed: int = 0,
          enabled: bool = True) -> Iterator[T]:
    """Yield ``items``, advancing a :func:`progress_bar` after each (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = completed + len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, completed=completed, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
