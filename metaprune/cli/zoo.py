"""``metaprune zoo ...``: list, inspect, pull, verify and publish zoo entries, and write model cards.

Every command turns a :class:`MetapruneError` (and an ``OSError`` on a path it was given, such as
``--to`` being a file) into one line on stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from metaprune.errors import MetapruneError

# The zoo modules load inside each command, so that `metaprune --help` starts without torch or matplotlib.

app = typer.Typer(help="The metaprune model zoo: verified, cached, offline-first pruned models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

IndexOption = Annotated[str | None, typer.Option("--index", help="Index file or URL (default: $METAPRUNE_INDEX or packaged).")]


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a MetapruneError into one `error: ...` line on stderr and exit status 1."""
    try:
        yield
    except MetapruneError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as error:  # a path given on the command line: a file where a folder belongs, read-only, ...
        where = f" {error.filename}" if error.filename else ""
        typer.echo(f"error: cannot use{where}: {error.strerror or error}", err=True)
        raise typer.Exit(code=1) from None


def _echo_rows(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@app.command("list")
def list_command(task: Annotated[str | None, typer.Option(help="Only entries of this task.")] = None,
                 pattern: Annotated[str | None, typer.Option(help="Only entries of this pattern (channel, n:m, ...).")]
                 = None,
                 index: IndexOption = None) -> None:
    """List the entries of the index."""
    from metaprune.zoo.registry import list_entries

    with one_line_errors():
        entries = list_entries(task=task, pattern=pattern, index=index)
    rows = [(e.name, e.task, e.pattern, f"{e.flops['pruned'] / max(e.flops['dense'], 1):.0%}", _test_metric(e))
            for e in entries]
    _echo_rows(rows, ("name", "task", "pattern", "flops", "test"))


def _test_metric(entry: Any) -> str:
    """The pruned model's test accuracy (%), or ``spearman=81.78`` (x100) for a sentence encoder."""
    pruned = entry.metrics["pruned"]
    if "test_spearman" in pruned and "test_accuracy" not in pruned:
        return f"spearman={pruned['test_spearman']:.2f}"
    return f"{100 * pruned.get('test_accuracy', float('nan')):.2f}"


@app.command("info")
def info_command(name: str, index: IndexOption = None) -> None:
    """Show one entry: metrics, recipe, files and checksums."""
    from metaprune.zoo.registry import info as entry_info

    with one_line_errors():
        entry = entry_info(name, index=index)
    typer.echo(f"{entry.name}  ({entry.task}, {entry.architecture} on {entry.dataset}, {entry.pattern})")
    typer.echo(f"FLOPs   dense {entry.flops['dense']:,}  pruned {entry.flops['pruned']:,}")
    typer.echo(f"params  dense {entry.params['dense']:,}  pruned {entry.params['pruned']:,}")
    for side in ("dense", "pruned"):
        typer.echo(f"{side:7} " + "  ".join(f"{k} {v:g}" for k, v in entry.metrics[side].items()))
    typer.echo(f"command {entry.recipe['command']}")
    typer.echo(f"license {entry.license}   metaprune {entry.metaprune_version}")
    for record in entry.files:
        typer.echo(f"  {record.name}  {record.size} B  sha256 {record.sha256}")


@app.command("pull")
def pull_command(name: str, offline: Annotated[bool, typer.Option(help="Use only the cache.")] = False,
                 index: IndexOption = None) -> None:
    """Download and verify an entry into the cache; prints its folder."""
    from metaprune.zoo.cache import pull as pull_entry

    with one_line_errors():
        typer.echo(pull_entry(name, offline=offline or None, index=index))


@app.command("verify")
def verify_command(name: str,
                   accuracy_points: Annotated[float, typer.Option(help="Allowed accuracy deviation, in points.")] = 1.0,
                   flops_fraction: Annotated[float, typer.Option(help="Allowed relative FLOPs deviation.")] = 0.01,
                   offline: Annotated[bool, typer.Option(help="Use only the cache.")] = False,
                   data_root: Annotated[str | None, typer.Option(help="Dataset folder (not needed for digits).")] = None,
                   index: IndexOption = None) -> None:
    """Re-measure accuracy and FLOPs and compare them with the card; exit 1 on a mismatch."""
    from metaprune.zoo.verify import Tolerance
    from metaprune.zoo.verify import verify as verify_entry

    with one_line_errors():
        result = verify_entry(name, tolerance=Tolerance(accuracy_points, flops_fraction),
                              offline=offline or None, index=index, data_root=data_root)
    typer.echo(result.summary())
    if not result.passed:
        raise typer.Exit(code=1)


@app.command("publish")
def publish_command(run_dir: Path, to: Annotated[Path, typer.Option("--to", help="Zoo folder to publish into.")],
                    name: Annotated[str | None, typer.Option(help="Entry name (default from the report).")] = None,
                    license: Annotated[str, typer.Option(help="License of the weights.")] = "Apache-2.0",
                    base_url: Annotated[str | None, typer.Option(help="Where --to will be served.")] = None,
                    subfolder: Annotated[str, typer.Option(help="Put entries in --to/SUBFOLDER/NAME/.")] = "",
                    task: Annotated[str, typer.Option(help="Task label for `zoo list --task`.")] = "image-classification",
                    data_root: Annotated[str | None, typer.Option(
                        help="Dataset folder, to check the recorded accuracy on one test batch (not needed for digits)."
                    )] = None,
                    ) -> None:
    """Publish a run directory (a pruned model, or any other entry kind such as a prompt-routed pipeline) as a zoo entry.

    The weights must load into the run's architecture and reproduce its recorded accuracy on one test batch."""
    from metaprune.zoo.publish import publish as publish_run

    with one_line_errors():
        entry = publish_run(run_dir, to, name, license=license, base_url=base_url, subfolder=subfolder, task=task,
                            data_root=data_root)
    typer.echo(f"published {entry.name} ({len(entry.files)} files) to {Path(to, subfolder, entry.name)}")


@app.command("card")
def card_command(run_dir: Path,
                 out: Annotated[Path | None, typer.Option(help="Folder for README.md and the chart (default RUN_DIR).")] = None) -> None:
    """Write the model card (README.md) and keep-ratio chart of a run directory."""
    from metaprune.rundir import write_text
    from metaprune.zoo.card import CARD_NAME, CHART_NAME, make_card

    folder = out or run_dir
    with one_line_errors():
        text = make_card(run_dir, chart_path=folder / CHART_NAME)
        write_text(folder / CARD_NAME, text)
    typer.echo(folder / CARD_NAME)

