"""The command line starts without its heavy libraries: help and refused options answer at once.

Timings live in benchmarks/cli_startup.py; these tests check the behaviour behind them, in a fresh
interpreter each: which modules a command line that only parses and refuses has loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torch_geometric", "ray", "diffusers", "transformers", "matplotlib", "optuna", "sklearn")


def loaded_after(code: str) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; the heavy modules it left in ``sys.modules``, and its stderr."""
    probe = (f"import sys\n{code}\n"
             f"print('MODULES=' + __import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    marker = [line for line in done.stdout.splitlines() if line.startswith("MODULES=")]
    assert marker, done.stderr
    return json.loads(marker[-1].removeprefix("MODULES=")), done.stderr


def test_importing_the_cli_and_its_sub_apps_loads_no_heavy_library() -> None:
    loaded, _ = loaded_after("import metaprune.cli\nmetaprune.cli._mount_subapps()")
    assert loaded == []


def run_main(*args: str) -> str:
    return ("from metaprune.cli import main\n"
            f"try:\n    main({list(args)!r})\nexcept SystemExit as stop:\n    print('EXIT=' + str(stop.code))")


@pytest.mark.parametrize(("args", "message"), [
    (("prune", "--model", "nosuchmodel", "--budget", "0.5"), "unknown model 'nosuchmodel'"),
    (("prune", "--model", "resnt20", "--budget", "0.5"), "did you mean 'resnet20'?"),
    (("prune", "--budget", "7"), "FLOPs budget must satisfy 0 < ratio <= 1"),
    (("prune", "--budget", "0.5", "--pattern", "diagonal"), "diagonal"),
    (("search", "--model", "nosuchmodel", "--budget", "0.5"), "unknown model 'nosuchmodel'"),
])
def test_a_refused_option_is_one_error_line_before_torch_loads(args: tuple[str, ...], message: str) -> None:
    loaded, stderr = loaded_after(run_main(*args))
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stderr
    assert loaded == []


@pytest.mark.parametrize("args", [("--help",), ("prune", "--help"), ("search", "--help"), ("zoo", "--help"),
                                  ("meta", "--help"), ("diffusion", "--help")])
def test_help_loads_no_heavy_library(args: tuple[str, ...]) -> None:
    loaded, _ = loaded_after(run_main(*args))
    assert loaded == []


def test_help_still_lists_every_command_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import run_cli

    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("prune", "eval", "info", "search", "zoo", "meta", "diffusion", "--quiet", "--verbose"):
        assert command in out
    code, out, _ = run_cli(["zoo", "--help"], capsys)
    for command in ("list", "info", "pull", "verify", "publish", "card"):
        assert command in out
    code, out, _ = run_cli(["prune", "--help"], capsys)
    for option in ("--model", "--budget", "--speedup", "--pattern", "--criterion", "--metanet", "--epochs", "--out"):
        assert option in out


def test_the_cli_knows_every_registered_model() -> None:
    from metaprune.cli.options import BUILTIN_MODELS
    from metaprune.models import list_models

    assert sorted(BUILTIN_MODELS) == list_models()


def test_calling_main_again_in_one_process_registers_each_command_once() -> None:
    """``main`` is called many times by API users and the in-process CLI tests; mounting the sub-apps
    on every call once made each later call slower (every group registered again)."""
    import contextlib

    import typer.main

    from metaprune.cli import app, main

    for _ in range(3):
        with contextlib.suppress(SystemExit):
            main(["--help"])
    names = [group.name for group in app.registered_groups]
    assert len(names) == len(set(names)) and {"zoo", "meta"} <= set(names)
    commands = typer.main.get_command(app).commands
    assert {"search", "prune", "zoo", "meta"} <= set(commands)
