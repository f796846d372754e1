"""``metaprune search``: per-group keep ratios under a FLOPs or measured-latency budget (attached by :func:`register`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from metaprune.cli import latency as latency_options
from metaprune.cli import options

Opt = typer.Option


def search(
    budget: options.BudgetRatio = None,
    speedup: options.Speedup = None,
    model: options.Model = "resnet20",
    width: options.Width = None,
    data: options.Data = "digits",
    data_root: options.DataRoot = None,
    image_size: options.ImageSize = 16,
    method: Annotated[str, Opt(help="optuna, ray, dp, erk, uniform, lamp, global_magnitude, halp, evolution, tas, dass (or a registered one); "
                                   "tas and dass take FLOPs budgets only.")]
    = "optuna",
    trials: Annotated[int, Opt(help="Complete trials to run (optuna, ray); generations for evolution; search epochs for tas and dass.")] = 50,
    objective: Annotated[str, Opt(help="distortion (cheap), bn_accuracy (val accuracy after BatchNorm re-estimation, cheap) "
                                             "or finetune (val accuracy after a short fine-tune).")]
    = "distortion",
    sampler: Annotated[str, Opt(help="tpe, cmaes or nsga2 (multi-objective: score vs FLOPs).")] = "tpe",
    out: options.Out = "runs/search",
    study: Annotated[str | None, Opt(help="Study name; an existing one resumes.")] = None,
    storage: Annotated[str | None, Opt(help="Optuna storage: database URL (many workers) or journal file path "
                                            "(default: optuna.journal in the run dir).")] = None,
    workers: Annotated[int, Opt(help="Concurrent trials (ray).")] = 1,
    address: Annotated[str | None, Opt(help="Ray cluster address to join (default: a local instance).")] = None,
    weights: Annotated[str | None, Opt(help="Dense weights (.safetensors); skips dense training.")] = None,
    epochs: options.Epochs = 12,
    lr: options.Lr = None,
    optimizer: options.Optimizer = None,
    batch_size: options.BatchSize = 64,
    min_keep: options.MinKeep = 0.1,
    round_to: latency_options.RoundTo = 1,
    seed: options.Seed = 0,
    prune: Annotated[bool, Opt(help="Prune and fine-tune the best plan (writes the `metaprune prune` files).")]
    = False,
    finetune_epochs: options.FinetuneEpochs = 4,
    finetune_lr: options.FinetuneLr = None,
    progress: options.Progress = True,
    overwrite: options.Overwrite = False,
    latency_speedup: latency_options.LatencySpeedup = None,
    latency_budget: latency_options.LatencyBudgetMs = None,
    latency_batch: latency_options.LatencyBatch = 1,
    latency_threads: latency_options.LatencyThreads = 1,
    latency_runtime: latency_options.LatencyRuntime = "torch",
    latency_table: latency_options.LatencyTable = None,
    latency_statistic: latency_options.Statistic = "median",
) -> None:
    """Search per-layer keep ratios under a FLOPs budget (or a measured latency: --latency-speedup,
    --latency-budget); writes best_plan.json, trials.csv, pareto.png."""
    from metaprune import logs
    from metaprune.cli import command_line
    from metaprune.errors import ConfigError
    from metaprune.prune.budget import Budget
    from metaprune.prune.spec import PruningSpec

    # The options are checked with light modules first: a bad one is refused before torch loads.
    training, finetune = options.training_specs(epochs, finetune_epochs, lr, finetune_lr, optimizer, batch_size)
    target = latency_options.latency_budget(latency_speedup, latency_budget, batch=latency_batch,
                                            threads=latency_threads, runtime=latency_runtime, table=latency_table,
                                            statistic=latency_statistic)
    if target is not None and (budget is not None or speedup is not None):
        raise ConfigError("give one budget: FLOPs (--budget/--speedup) or latency (--latency-speedup/--latency-budget)")
    flops_budget = Budget.from_options(budget, speedup) if target is None else None
    task = options.task_spec(model, width, data, data_root, image_size, seed)
    pruning = PruningSpec(min_keep=min_keep, round_to=round_to)
    from metaprune.workflows.search import SearchOptions, run_search, score_meaning

    job = SearchOptions(
        budget=flops_budget, method=method, task=task, training=training,
        finetune=finetune, pruning=pruning, trials=trials, objective=objective,
        sampler=sampler, out=out, study=study, storage=storage, workers=workers, address=address, weights=weights,
        prune=prune, progress=progress, overwrite=overwrite, latency_budget=target,
    )
    with logs.run_log(out, header=command_line()):
        result, pruned = run_search(job)
    console = Console()
    complete = sum(trial.state == "COMPLETE" for trial in result.trials)
    measured = "" if result.latency is None else (
        f", measured latency {result.latency['measured_ms']:.3g} ms = {result.latency['measured_speedup']:.2f}x "
        f"speed-up (predicted {result.latency['predicted_ms']:.3g} ms; asked {result.latency['request']})")
    console.print(f"{result.method}: {complete} complete trials, best score {result.best_score:.4g} "
                  f"({score_meaning(result.method, objective)}; higher is better) at FLOPs ratio "
                  f"{result.best_plan.flops_ratio:.4f}{measured}; wrote {out}/{{best_plan.json, trials.csv, pareto.png}}")
    if pruned is not None:
        report = pruned.report
        console.print(f"pruned: test accuracy {report.pruned.test_accuracy:.4f} (dense {report.dense.test_accuracy:.4f}),"
                      f" FLOPs speed-up {report.speedup['flops']:.2f}x; wrote {pruned.run_dir}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``search`` command to the ``metaprune`` app."""
    app.command("search")(search)
