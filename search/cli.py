"""``metaprune search``: per-group keep ratios under a FLOPs budget (attached by :func:`register`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

Opt = typer.Option


def search(
    budget: Annotated[float | None, Opt(help="FLOPs ratio to keep, 0 < r <= 1.")] = None,
    speedup: Annotated[float | None, Opt(help="FLOPs speed-up >= 1 (alternative to --budget).")] = None,
    model: Annotated[str, Opt(help="Registry name of the model.")] = "resnet20",
    width: Annotated[float | None, Opt(help="Width multiplier (ResNet/VGG).")] = None,
    data: Annotated[str, Opt(help="digits (embedded), cifar10 or imagefolder.")] = "digits",
    data_root: Annotated[str | None, Opt(help="Local path for cifar10 / imagefolder data.")] = None,
    image_size: Annotated[int, Opt(help="Input side length.")] = 16,
    method: Annotated[str, Opt(help="optuna, ray, dp, erk, uniform, lamp, global_magnitude (or a registered one).")]
    = "optuna",
    trials: Annotated[int, Opt(help="Complete trials to run (optuna, ray); search epochs for tas and dass.")] = 50,
    objective: Annotated[str, Opt(help="distortion (cheap) or finetune (val accuracy after a short fine-tune).")]
    = "distortion",
    sampler: Annotated[str, Opt(help="tpe, cmaes or nsga2 (multi-objective: score vs FLOPs).")] = "tpe",
    out: Annotated[str, Opt(help="Run directory.")] = "runs/search",
    study: Annotated[str | None, Opt(help="Study name; an existing one resumes.")] = None,
    storage: Annotated[str | None, Opt(help="Optuna storage: database URL (many workers) or journal file path "
                                            "(default: optuna.journal in the run dir).")] = None,
    workers: Annotated[int, Opt(help="Concurrent trials (ray).")] = 1,
    address: Annotated[str | None, Opt(help="Ray cluster address to join (default: a local instance).")] = None,
    weights: Annotated[str | None, Opt(help="Dense weights (.safetensors); skips dense training.")] = None,
    epochs: Annotated[int, Opt(help="Epochs to train the dense model (once; cached in the run dir).")] = 12,
    min_keep: Annotated[float, Opt(help="Fraction of each group's channels always kept.")] = 0.1,
    seed: Annotated[int, Opt(help="Seed for data, training and search.")] = 0,
    prune: Annotated[bool, Opt(help="Prune and fine-tune the best plan (writes the `metaprune prune` files).")]
    = False,
    finetune_epochs: Annotated[int, Opt(help="Fine-tuning epochs with --prune.")] = 4,
    progress: Annotated[bool, Opt(help="Show progress bars.")] = True,
) -> None:
    """Search per-layer keep ratios under a FLOPs budget; writes best_plan.json, trials.csv, pareto.png."""
    from metaprune.prune.budget import Budget
    from metaprune.search.runner import SearchOptions, run_search

    options = SearchOptions(
        budget=Budget.from_options(budget, speedup), method=method, model=model,
        model_kwargs={} if width is None else {"width": width}, data=data, data_root=data_root,
        image_size=image_size, trials=trials, objective=objective, sampler=sampler, out=out, study=study,
        storage=storage, workers=workers, address=address, weights=weights, seed=seed, epochs=epochs,
        min_keep=min_keep, prune=prune, finetune_epochs=finetune_epochs, progress=progress,
    )
    result, pruned = run_search(options)
    console = Console()
    complete = sum(trial.state == "COMPLETE" for trial in result.trials)
    console.print(f"{result.method}: {complete} complete trials, best score {result.best_score:.4g} at FLOPs ratio "
                  f"{result.best_plan.flops_ratio:.4f}; wrote {out}/{{best_plan.json, trials.csv, pareto.png}}")
    if pruned is not None:
        report = pruned.report
        console.print(f"pruned: test accuracy {report.pruned.test_accuracy:.4f} (dense {report.dense.test_accuracy:.4f}),"
                      f" FLOPs speed-up {report.speedup['flops']:.2f}x; wrote {pruned.run_dir}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``search`` command to the ``metaprune`` app."""
    app.command("search")(search)
