"""The ``metaprune`` command line: ``prune``, ``eval``, ``info`` and the sub-apps of the other packages.

Every :class:`~metaprune.errors.MetapruneError` becomes one ``error: ...`` line on stderr
and exit status 1; bad usage is typer's usage message and exit status 2.
"""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from metaprune import logs
from metaprune.cli import latency as latency_options
from metaprune.cli import options
from metaprune.errors import ConfigError, MetapruneError

app = typer.Typer(
    name="metaprune", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Learned meta-pruning and AutoML for PyTorch: prune, search, meta-train, pull pruned models.",
)
console = Console()
_invocation: list[str] = []  # the arguments of this run, recorded in reports as the reproducing command


@app.callback()
def output_options(quiet: options.Quiet = False, verbose: options.Verbose = False) -> None:
    """Set how much every command says on stderr (stage lines and progress; results go to stdout)."""
    if quiet and verbose:
        raise ConfigError("--quiet and --verbose contradict each other; give one")
    logs.configure(logs.QUIET if quiet else logs.VERBOSE if verbose else logs.NORMAL)


def command_line() -> str:
    """The reproducing command of this run (``metaprune ...``), for reports and run.log."""
    return "metaprune " + shlex.join(_invocation)


@functools.cache  # ``main`` runs many times in one process (API, tests)
def _mount_subapps() -> None:
    """Attach the sub-command groups that other packages provide, when they are installed (once per process:
    attaching again would register every group twice and make each later call slower)."""
    import importlib

    for name, module_name in (("zoo", "metaprune.cli.zoo"), ("search", "metaprune.cli.search"),
                              ("meta", "metaprune.cli.meta"), ("diffusion", "metaprune.cli.diffusion"),
                              ("latency", "metaprune.cli.latency")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith("metaprune"):
                continue
            raise
        sub_app = getattr(module, "app", None)
        if isinstance(sub_app, typer.Typer):
            app.add_typer(sub_app, name=name)
        elif callable(getattr(module, "register", None)):
            module.register(app)


def _load_dense(weights: str, task: Any) -> Any:
    """The dense model of ``task`` with weights from a safetensors file or from the ``dense.safetensors``
    a prune or search run saved (never the run's pruned model)."""
    from metaprune.rundir import DENSE_WEIGHTS_FILE

    path = Path(weights)
    if path.is_dir():
        if not (path / DENSE_WEIGHTS_FILE).is_file():
            raise ConfigError(f"--weights {path} holds no {DENSE_WEIGHTS_FILE} (runs save their dense model there); "
                              "pass a dense weights file instead")
        path = path / DENSE_WEIGHTS_FILE
    return task.load_model(path, task.load_splits())


@app.command()
def prune(
    model: options.Model = "resnet20",
    data: options.Data = "digits",
    data_root: options.DataRoot = None,
    image_size: options.ImageSize = 16,
    width: options.Width = None,
    budget: options.BudgetRatio = None,
    speedup: options.Speedup = None,
    pattern: Annotated[str, typer.Option(help="channel, head, unstructured or n:m.")] = "channel",
    criterion: Annotated[str, typer.Option(help="random, l1, l2, group_l2, output_group_l2, taylor, bn_scale, lamp, or meta / meta_group_l2 (need --metanet).")] = "group_l2",
    metanet: Annotated[str | None, typer.Option(help="Trained metanetwork (metanet.safetensors or its training dir) for --criterion meta or meta_group_l2.")] = None,
    ranking: Annotated[str, typer.Option(help="global or local ranking of scores, or knapsack (importance per unit of cost: HALP with a latency budget).")] = "global",
    schedule: Annotated[str, typer.Option(help="oneshot, iterative, gradual, lottery or regrow.")] = "oneshot",
    steps: Annotated[int, typer.Option(help="Pruning steps of iterative/lottery schedules.")] = 3,
    min_keep: options.MinKeep = 0.1,
    n_m: Annotated[str, typer.Option("--n-m", help="N:M pattern, e.g. 2:4.")] = "2:4",
    calibration_text: Annotated[str | None, typer.Option(help="Text models: calibration sentences, one per line "
                                                         "(default: STS-B train).")] = None,
    distill_epochs: Annotated[int, typer.Option(help="Text models, --pattern head-ffn: epochs of embedding "
                                                "distillation from the dense model on STS-B train (0 = off).")] = 0,
    epochs: options.Epochs = 12,
    finetune_epochs: options.FinetuneEpochs = 4,
    lr: options.Lr = None,
    finetune_lr: options.FinetuneLr = None,
    optimizer: options.Optimizer = None,
    batch_size: options.BatchSize = 64,
    distill: Annotated[bool, typer.Option(help="Fine-tune with knowledge distillation from the dense model.")] = False,
    recalibrate_bn: Annotated[bool, typer.Option(help="Re-estimate BatchNorm statistics after each pruning step.")] = True,
    weights: options.Weights = None,
    plan: Annotated[str | None, typer.Option(help="Re-apply a saved structured plan.json instead of allocating.")] = None,
    seed: options.Seed = 0,
    latency: Annotated[bool, typer.Option(help="Measure CPU latency.")] = True,
    latency_speedup: latency_options.LatencySpeedup = None,
    latency_budget: latency_options.LatencyBudgetMs = None,
    latency_batch: latency_options.LatencyBatch = 1,
    latency_threads: latency_options.LatencyThreads = 1,
    latency_runtime: latency_options.LatencyRuntime = "torch",
    latency_table: latency_options.LatencyTable = None,
    latency_statistic: latency_options.Statistic = "median",
    round_to: latency_options.RoundTo = 1,
    out: options.Out = "runs/prune",
    overwrite: options.Overwrite = False,
) -> None:
    """Prune a model to a FLOPs budget, fine-tune it, and write plan.json, report.json, model.safetensors, report.png."""
    from metaprune.cli import text

    if text.is_text_task(model, data):  # a pretrained sentence encoder: its own retraining-free workflow
        text.prune_text(model=model, data=data, data_root=data_root, budget=budget, speedup=speedup, pattern=pattern,
                        criterion=criterion, n_m=n_m, calibration_text=calibration_text, seed=seed, latency=latency,
                        threads=latency_threads, out=out, overwrite=overwrite, command=shlex.join(_invocation),
                        distill_epochs=distill_epochs, latency_speedup=latency_speedup, round_to=round_to)
        return
    # The options are checked with light modules first: a bad one is refused before torch loads.
    from metaprune.prune.budget import Budget
    from metaprune.prune.plan import PrunePlan
    from metaprune.prune.spec import PruningSpec

    recipe = PrunePlan.load(plan) if plan else None
    if recipe is not None:
        if budget is not None or speedup is not None:
            raise ConfigError("--plan brings its own budget (the FLOPs ratio it was made for): drop --budget/--speedup, "
                              "or search a new plan for the new budget")
        budget = recipe.flops_ratio or 1.0
    training, finetune = options.training_specs(epochs, finetune_epochs, lr, finetune_lr, optimizer, batch_size)
    target = latency_options.latency_budget(latency_speedup, latency_budget, batch=latency_batch,
                                            threads=latency_threads, runtime=latency_runtime, table=latency_table,
                                            statistic=latency_statistic)
    if target is not None and (budget is not None or speedup is not None):
        raise ConfigError("give one budget: FLOPs (--budget/--speedup) or latency (--latency-speedup/--latency-budget)")
    flops_budget = Budget.from_options(budget, speedup) if target is None else None
    task = options.task_spec(model, width, data, data_root, image_size, seed)
    pruning = PruningSpec(pattern=pattern, criterion=criterion,
                          criterion_options={} if metanet is None else {"metanet": metanet}, ranking=ranking,
                          schedule=schedule, steps=steps, min_keep=min_keep, n_m=options.parse_n_m(n_m),
                          recalibrate_bn=recalibrate_bn, round_to=round_to)
    from metaprune.workflows.prune import PruneOptions, run_prune

    job = PruneOptions(budget=flops_budget, latency_budget=target, task=task, training=training, finetune=finetune, pruning=pruning,
                       distill=distill, recipe=recipe, latency=latency, out=out, overwrite=overwrite,
                       command=command_line())
    with logs.run_log(out, header=command_line()):
        dense = _load_dense(weights, job.task) if weights else None
        result = run_prune(job, dense_model=dense)
    _print_report(result.report)
    console.print(f"wrote {result.run_dir}/{{plan.json, report.json, model.safetensors, architecture.json, "
                  "report.png, dense.safetensors, run.log}")


def _print_report(report: Any) -> None:
    from metaprune.cli.tables import print_prune_report

    print_prune_report(report, f"{report.model} on {report.dataset}: {report.pattern} / {report.criterion} / "
                       f"{report.schedule}", ("val acc", "test acc"),
                       lambda _label, figures: (f"{figures.val_accuracy:.4f}", f"{figures.test_accuracy:.4f}"),
                       seconds=report.wall_time_s)


@app.command("eval")
def evaluate_run(
    run_dir: Annotated[str, typer.Argument(help="A run directory written by `metaprune prune`.")],
    data_root: options.DataRoot = None,
) -> None:
    """Re-measure a run directory's model (accuracy, FLOPs, params, latency) and compare with its report."""
    from metaprune.cli import text
    from metaprune.models.minilm import TEXT_RUN_FILE

    if (Path(run_dir) / TEXT_RUN_FILE).is_file():  # a text encoder: STS-B Spearman instead of accuracy
        text.evaluate_text(run_dir, data_root)
        return
    from metaprune.data import load_dataset, make_loaders
    from metaprune.prune.report import PruneReport
    from metaprune.prune.saving import load_run
    from metaprune.rundir import REPORT_FILE
    from metaprune.workflows.prune import measure

    model = load_run(run_dir)
    report = PruneReport.load(Path(run_dir) / REPORT_FILE)
    splits = load_dataset(report.dataset, root=data_root, image_size=_image_size_of(run_dir), seed=report.seed)
    loaders = make_loaders(splits, seed=report.seed)
    example_input = splits.test[0][0].unsqueeze(0)
    figures = measure(model, example_input, loaders, masked=report.pattern in ("unstructured", "n:m"), latency=True)
    table = Table(title=f"{run_dir}")
    for column in ("", "FLOPs", "params", "test acc", "latency ms"):
        table.add_column(column, justify="right")
    table.add_row("report", f"{report.pruned.flops:,}", f"{report.pruned.nonzero_params:,}",
                  f"{report.pruned.test_accuracy:.4f}", f"{report.pruned.latency_ms or 0:.2f}")
    table.add_row("measured", f"{figures.flops:,}", f"{figures.nonzero_params:,}", f"{figures.test_accuracy:.4f}",
                  f"{figures.latency_ms:.2f}")
    console.print(table)


def _image_size_of(run_dir: str) -> int:
    from metaprune.prune.saving import read_architecture

    return int(read_architecture(run_dir)["input_shape"][-1])


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="Registry name (e.g. resnet20; `list` lists them) or a factory "
                                              "reference: path/to/file.py:make_net, package.module:make_net.")],
    image_size: Annotated[int, typer.Option(help="Input side length.")] = 16,
    in_channels: Annotated[int, typer.Option(help="Input channels.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Classes.")] = 10,
) -> None:
    """Show a model's parameters, FLOPs and prunable groups."""
    import torch

    from metaprune.flops import count_flops, count_params
    from metaprune.models import create_model, list_models
    from metaprune.prune.groups import ModelGroups

    if model == "list":
        console.print("\n".join(list_models()))
        return
    network = create_model(model, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    example_input = torch.zeros(1, in_channels, image_size, image_size)
    groups = ModelGroups(network, example_input)
    console.print(f"[bold]{model}[/bold]: {count_params(network):,} parameters, "
                  f"{count_flops(network, example_input):,} FLOPs at {in_channels}x{image_size}x{image_size}")
    table = Table(title=f"{len(groups.groups)} prunable groups")
    for column in ("group", "kind", "size", "layers"):
        table.add_column(column)
    for group in groups.groups:
        table.add_row(group.name, group.kind, str(group.size), str(len(group.out_layers) + len(group.in_layers)))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metaprune`` script."""
    _mount_subapps()
    _invocation[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, standalone_mode=False)  # click returns, not raises, exit codes in this mode
    except MetapruneError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
    except OSError as error:  # a path that cannot be read or written: name it and the reason, no traceback
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"error: {where}{error.strerror or error}", err=True)
        raise SystemExit(1) from None
    except (typer.Exit, SystemExit) as stop:
        raise SystemExit(getattr(stop, "exit_code", getattr(stop, "code", 0))) from None
    except Exception as error:  # click usage errors arrive here with standalone_mode=False
        # typer may ship its own copy of click, so recognise click's exceptions by their interface
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            raise SystemExit(error.exit_code) from None
        if type(error).__name__ == "Abort":
            raise SystemExit(130) from None
        raise
    if isinstance(code, int) and code:
        raise SystemExit(code)

