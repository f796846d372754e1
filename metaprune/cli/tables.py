"""The dense-vs-pruned table that ``metaprune prune`` prints for every kind of model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_prune_report(report: Any, title: str, quality_columns: Sequence[str],
                       quality_cells: Callable[[str, Any], Sequence[str]], *, params_column: str = "params",
                       latency_column: str = "latency ms", time_label: str = "wall time",
                       seconds: float | None = None) -> None:
    """Print FLOPs, non-zero parameters, the task's quality figures and latency for dense and pruned, then
    the FLOPs and measured latency speed-ups; ``quality_cells(label, figures)`` gives one row's quality cells."""
    table = Table(title=title)
    for column in ("", "FLOPs", params_column, *quality_columns, latency_column):
        table.add_column(column, justify="right")
    for label, figures in (("dense", report.dense), ("pruned", report.pruned)):
        latency = f"{figures.latency_ms:.2f}" if figures.latency_ms else "-"
        table.add_row(label, f"{figures.flops:,}", f"{figures.nonzero_params:,}", *quality_cells(label, figures),
                      latency)
    console.print(table)
    latency_speedup = report.speedup["latency"]
    console.print(f"FLOPs speed-up {report.speedup['flops']:.2f}x"
                  + (f", measured CPU latency speed-up {latency_speedup:.2f}x" if latency_speedup else "")
                  + (f", {time_label} {seconds:.1f}s" if seconds is not None else ""))
