"""``metaprune prune`` for text encoders (``--model minilm`` / ``--data stsb``): options in, table out.

Kept apart from the image prune command so that its options are checked with light modules first
and torch/transformers load only once they are valid.
"""

from __future__ import annotations

from typing import Any

from metaprune.cli.options import parse_n_m
from metaprune.cli.tables import console, print_prune_report
from metaprune.errors import ConfigError

#: Names of the text models and data sets (checked again against their registries when the job runs).
TEXT_MODELS = ("minilm",)
TEXT_DATA = ("stsb",)
#: The prune command's default criterion, which means "the text pattern's default" here.
IMAGE_DEFAULT_CRITERION = "group_l2"


def is_text_task(model: str, data: str) -> bool:
    """Whether the prune options name a text model or a text data set."""
    return model in TEXT_MODELS or data in TEXT_DATA


def prune_text(*, model: str, data: str, data_root: str | None, budget: float | None, speedup: float | None,
               pattern: str, criterion: str, n_m: str, calibration_text: str | None, seed: int, latency: bool,
               threads: int, out: str | None, overwrite: bool, command: str, distill_epochs: int = 0,
               latency_speedup: float | None = None, round_to: int = 1) -> None:
    """Validate the options, run :func:`metaprune.workflows.text.run_text_prune` and print its figures."""
    if model not in TEXT_MODELS or data not in TEXT_DATA:
        raise ConfigError(f"text models ({', '.join(TEXT_MODELS)}) go with text data ({', '.join(TEXT_DATA)}): "
                          f"got --model {model} --data {data}")
    if criterion == IMAGE_DEFAULT_CRITERION:  # not chosen: the best retraining-free method of the pattern
        criterion = "fisher-mask" if pattern == "head-ffn" else "sparsegpt"
    from metaprune.prune.budget import Budget

    has_budget = budget is not None or speedup is not None
    job_budget = Budget.from_options(budget, speedup) if has_budget else None
    n, m = parse_n_m(n_m)
    from metaprune.workflows.text import TextPruneOptions, run_text_prune

    options = TextPruneOptions(data_root=data_root, budget=job_budget, model=model, data=data, pattern=pattern,
                               criterion=criterion, n_m=(n, m), calibration_text=calibration_text, seed=seed,
                               latency=latency, threads=threads, out=out, overwrite=overwrite,
                               distill_epochs=distill_epochs, latency_speedup=latency_speedup,
                               round_to=round_to,
                               command=f"metaprune {command}")
    result = run_text_prune(options)
    print_text_report(result.report)
    if result.run_dir is not None:
        console.print(f"wrote {result.run_dir}/{{report.json, config.json, model.safetensors, tokenizer files}}")


def print_text_report(report: Any) -> None:
    """Dense vs pruned: FLOPs, parameters, STS-B dev/test Spearman, latency (and distillation, if any)."""
    print_prune_report(report, f"{report.model} on {report.dataset}: {report.pattern} / {report.criterion}",
                       ("dev Spearman", "test Spearman"),
                       lambda label, _figures: (f"{report.extra[label]['dev_spearman']:.2f}",
                                                f"{report.extra[label]['test_spearman']:.2f}"),
                       params_column="non-zero params", latency_column="latency ms (batch 1)",
                       time_label="pruning time", seconds=report.extra["prune_time_s"])
    distill = report.extra.get("distill")
    if distill:
        chosen = distill["best_epoch"]
        console.print(f"distillation: {len(distill['epoch_losses'])} epoch(s) on {distill['sentences']} sentences in "
                      f"{distill['seconds']:.0f}s; dev Spearman by epoch "
                      f"{', '.join(f'{score:.2f}' for score in distill['epoch_dev_spearman'])}; "
                      + (f"kept epoch {chosen}" if chosen else "kept the undistilled model"))


def evaluate_text(run_dir: str, data_root: str | None) -> None:
    """``metaprune eval RUN`` for a text run: report vs measured FLOPs, parameters, STS-B dev/test Spearman,
    latency (batch 1, sequence 128)."""
    from rich.table import Table

    from metaprune.workflows.text import evaluate_text_run

    report, figures, extra = evaluate_text_run(run_dir, data_root)
    table = Table(title=f"{run_dir}")
    for column in ("", "FLOPs", "non-zero params", "dev Spearman", "test Spearman", "latency ms"):
        table.add_column(column, justify="right")
    saved = report.extra["pruned"]
    table.add_row("report", f"{report.pruned.flops:,}", f"{report.pruned.nonzero_params:,}",
                  f"{saved['dev_spearman']:.2f}", f"{saved['test_spearman']:.2f}", f"{report.pruned.latency_ms or 0:.2f}")
    table.add_row("measured", f"{figures.flops:,}", f"{figures.nonzero_params:,}", f"{extra['dev_spearman']:.2f}",
                  f"{extra['test_spearman']:.2f}", f"{figures.latency_ms or 0:.2f}")
    console.print(table)
