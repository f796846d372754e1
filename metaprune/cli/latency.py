"""``metaprune profile`` (latency tables) and ``metaprune export`` (ONNX), attached by :func:`register`;
and the latency-budget options that ``metaprune prune`` and ``metaprune search`` share (:func:`latency_budget`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from metaprune.cli import options
from metaprune.errors import ConfigError

Opt = typer.Option
console = Console()

# Latency budget options of `metaprune prune` and `metaprune search` (exactly one of the two targets).
LatencySpeedup = Annotated[float | None, Opt(help="Measured latency speed-up >= 1 to prune (or search) to, instead "
                                                  "of --budget/--speedup.")]
LatencyBudgetMs = Annotated[float | None, Opt("--latency-budget", help="Measured latency in ms to prune (or search) to.")]
LatencyBatch = Annotated[int, Opt(help="Batch size the latency is measured at.")]
LatencyThreads = Annotated[int, Opt(help="CPU threads the latency is measured with.")]
LatencyRuntime = Annotated[str, Opt(help="torch (eager) or onnxruntime.")]
LatencyTable = Annotated[str | None, Opt(help="A latency table file (`metaprune profile --out`); default: the cache.")]
Statistic = Annotated[str, Opt(help="median or min wall time of the timed runs, or cpu: median CPU time per run "
                                   "(one thread; steady on a machine shared with other jobs).")]
RoundTo = Annotated[int, Opt(help="Keep multiples of this many channels in every group (structured patterns).")]


def latency_budget(speedup: float | None, budget_ms: float | None, *, batch: int, threads: int, runtime: str,
                   table: str | None, statistic: str) -> Any:
    """The :class:`~metaprune.latency.budget.LatencyBudget` of the prune options, or None without a latency target."""
    if speedup is None and budget_ms is None:
        return None
    from metaprune.latency.budget import LatencyBudget
    from metaprune.latency.profile import ProfileSettings

    settings = ProfileSettings(batch=batch, threads=threads, runtime=runtime, statistic=statistic)
    return LatencyBudget(speedup=speedup, budget_ms=budget_ms, settings=settings, table=table)


def profile(
    model: options.Model = "resnet20",
    width: options.Width = None,
    input_size: Annotated[str, Opt(help="Input shape without the batch: CxHxW (e.g. 3x32x32) or a side (32).")]
    = "3x32x32",
    num_classes: Annotated[int, Opt(help="Classes of the model's head.")] = 10,
    batch: Annotated[int, Opt(help="Batch size of every timed call.")] = 1,
    threads: Annotated[int, Opt(help="CPU threads (torch intra-op, or ONNX Runtime intra-op).")] = 1,
    runtime: LatencyRuntime = "torch",
    device: Annotated[str, Opt(help="cpu (the only device profiled so far).")] = "cpu",
    points: Annotated[int, Opt(help="Widths per layer axis, evenly from --min-keep to dense; 0: every width up "
                                    "to 16, then each multiple of 8 and the width after it (kernel steps).")] = 0,
    min_keep: options.MinKeep = 0.1,
    rounds: Annotated[int, Opt(help="Passes over the layer grids and rounds over the whole networks (medians).")]
    = 3,
    statistic: Statistic = "median",
    refresh: Annotated[bool, Opt(help="Measure again even if the cache holds a table.")] = False,
    out: Annotated[str | None, Opt(help="Also write the table to this JSON file.")] = None,
) -> None:
    """Measure (or reuse from the cache) a model's latency table: per-layer latency against width, calibrated
    on whole pruned networks; prints the prediction error on networks the fit did not see."""
    import torch

    from metaprune.latency.profile import ProfileSettings, load_or_profile
    from metaprune.latency.timing import check_runtime
    from metaprune.models import create_model

    check_runtime(runtime, device)
    shape = parse_input_size(input_size)
    settings = ProfileSettings(batch=batch, threads=threads, runtime=runtime, points=points, min_keep=min_keep,
                               rounds=rounds, statistic=statistic)
    extra = {} if width is None else {"width": width}
    network = create_model(model, num_classes=num_classes, in_channels=shape[0], image_size=shape[-1], **extra)
    example_input = torch.zeros(1, *shape)
    table, path, measured = load_or_profile(network, example_input, settings, refresh=refresh)
    if out is not None:
        from metaprune.rundir import check_out_file

        table.save(check_out_file(out))
    summary = Table(title=f"{model} {input_size}, batch {batch}, {threads} thread(s), {runtime} on {table.key.hardware}")
    for column in ("network", "measured ms", "predicted ms", "error"):
        summary.add_column(column, justify="right")
    for label, rows in (("fit", table.calibration), ("held out", table.validation)):
        for index, row in enumerate(rows):
            summary.add_row(f"{label} {index}", f"{row['measured_ms']:.3f}", f"{row['predicted_ms']:.3f}",
                            f"{row['error']:+.1%}")
    console.print(summary)
    worst = max((abs(row["error"]) for row in table.validation), default=float("nan"))
    console.print(f"{'measured' if measured else 'cached'} table {path} ({len(table.grids)} layer grids, dense "
                  f"{table.dense_ms:.3f} ms); largest held-out prediction error {worst:.1%}")


def parse_input_size(text: str) -> tuple[int, ...]:
    """``3x32x32`` -> (3, 32, 32); a single side ``32`` means 3x32x32."""
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--input-size {text!r}: write CxHxW (e.g. 3x32x32) or one side (32)") from None
    if len(sizes) == 1:
        sizes = (3, sizes[0], sizes[0])
    if any(size < 1 for size in sizes) or len(sizes) < 2:
        raise ConfigError(f"--input-size {text!r}: every size must be >= 1, with channels first (CxHxW)")
    return sizes


def export(
    run_dir: Annotated[str, typer.Argument(help="A run directory written by `metaprune prune` or `search`.")],
    format: Annotated[str, Opt("--format", help="onnx (the only format so far).")] = "onnx",
    out: Annotated[str | None, Opt(help="File to write (default RUN_DIR/model.onnx).")] = None,
    batch: Annotated[int, Opt(help="Batch size the exported model takes.")] = 1,
    allow_masked: Annotated[bool, Opt(help="Export an unstructured/N:M run anyway (it runs at dense cost).")] = False,
) -> None:
    """Export a pruned run to ONNX; ONNX Runtime's outputs are checked against PyTorch's (within 1e-4)."""
    if format != "onnx":
        raise ConfigError(f"--format {format!r}: only onnx is supported")
    from metaprune.export import ONNX_TOLERANCE, export_run

    result = export_run(run_dir, out, allow_masked=allow_masked, batch=batch)
    console.print(f"wrote {result.path} ({result.exporter} exporter); ONNX Runtime matches PyTorch on "
                  f"{result.outputs} output(s) within {result.max_abs_error:.2g} (tolerance {ONNX_TOLERANCE:g})")


def register(app: typer.Typer) -> None:
    """Attach ``profile`` and ``export`` to the main app."""
    app.command("profile")(profile)
    app.command("export")(export)
