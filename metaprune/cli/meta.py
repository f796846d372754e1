"""``metaprune meta population`` and ``metaprune meta train`` (also ``python train_meta.py population|train``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from metaprune import logs
from metaprune.cli import command_line, options
from metaprune.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Train a population of networks and meta-train the graph metanetwork on it.")
console = Console()

POPULATION = "runs/meta-population"

MetaData = Annotated[str | None, typer.Option(
    "--data", help="Data set: digits (embedded, the default), cifar10-jpeg (a train/ + test/ JPEG tree, e.g. "
    "../shared/data/cifar10-jpeg), cifar10 (python batches) or imagefolder. `train` defaults to the population's.")]
MetaDataRoot = Annotated[str | None, typer.Option(help="Folder of --data (cifar10-jpeg: needs train/ and test/).")]
MetaImageSize = Annotated[int | None, typer.Option(help="Input side length (default 16 for digits, 32 otherwise).")]
ValImages = Annotated[int | None, typer.Option(help="Score on this many validation images (seeded subset; "
                                                    "default all).")]


@app.command()
def population(
    out: Annotated[str, typer.Option(help="Folder for the networks and population.json.")] = POPULATION,
    architectures: Annotated[str, typer.Option(help="Comma-separated registry names.")] = "resnet20,vgg11,mlp",
    widths: Annotated[str, typer.Option(help="Comma-separated width multipliers (ResNet/VGG).")] = "0.5,0.75,1.0",
    seeds_per_spec: Annotated[int, typer.Option(help="Networks per architecture x width.")] = 2,
    epochs: Annotated[int, typer.Option(help="Training epochs per network.")] = 8,
    image_size: MetaImageSize = None,
    seed: options.Seed = 0,
    data: MetaData = None,
    data_root: MetaDataRoot = None,
    train_images: Annotated[int | None, typer.Option(help="Train every network on this many training images "
                                                         "(seeded subset; default all).")] = None,
    val_images: ValImages = None,
    weights: Annotated[str | None, typer.Option(help="Start every network from these trained weights (a safetensors "
                                                     "file of one architecture x width): fine-tuned siblings.")] = None,
    lr: Annotated[float | None, typer.Option(help="SGD learning rate (default 0.05 from scratch, 0.01 with "
                                                  "--weights).")] = None,
) -> None:
    """Train the population on the embedded digits or on --data (resumable: finished networks are kept)."""
    from metaprune.workflows.meta_training import train_population

    try:
        width_values = [float(value) for value in widths.split(",")]
    except ValueError as error:
        raise ConfigError(f"--widths must be comma-separated numbers, got {widths!r}") from error
    with logs.run_log(out, header=command_line()):
        networks = train_population(out, architectures=architectures.split(","), widths=width_values,
                                    seeds_per_spec=seeds_per_spec, epochs=epochs, image_size=image_size, seed=seed,
                                    data=data or "digits", data_root=data_root, train_images=train_images,
                                    val_images=val_images, weights=weights, lr=lr)
    for network in networks:
        console.print(f"{network.name:28s} {network.split:5s} val {network.val_accuracy:.4f} test {network.test_accuracy:.4f}")
    console.print(f"wrote {len(networks)} networks and population.json to {out}")


@app.command()
def train(
    population: Annotated[str, typer.Option(help="Population folder (from `population`).")] = POPULATION,
    out: Annotated[str, typer.Option(help="Folder for checkpoints, metanet.safetensors, meta_report.*.")] = "runs/meta",
    epochs: Annotated[int, typer.Option(help="Meta-training epochs.")] = 10,
    steps_per_epoch: Annotated[int, typer.Option(help="Optimizer steps per epoch.")] = 40,
    hidden: Annotated[int, typer.Option(help="Metanetwork width.")] = 32,
    layers: Annotated[int, typer.Option(help="Message-passing layers.")] = 3,
    epsilon: Annotated[float, typer.Option(help="Rewrite step size: w' = w + epsilon * delta.")] = 0.1,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    sparsity_weight: Annotated[float, typer.Option(help="Weight of the group-sparsity penalty.")] = 0.5,
    target_keep: Annotated[float, typer.Option(help="Share of each group's channels treated as important.")] = 0.35,
    val_speedup: Annotated[float, typer.Option(help="FLOPs speed-up used for validation (no fine-tune).")] = 8.0,
    prune_aware_weight: Annotated[float, typer.Option(help="Weight of the cross-entropy of the rewritten network with "
                                                           "each group's weakest channels switched off (0: off).")] = 0.0,
    image_size: MetaImageSize = None,
    seed: options.Seed = 0,
    data: MetaData = None,
    data_root: MetaDataRoot = None,
    val_images: ValImages = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    overwrite: options.Overwrite = False,
    include: Annotated[str | None, typer.Option(help="Comma-separated glob patterns of population network names to "
                                                   "use (e.g. 'resnet20-*,vgg11-w0.5-*'); default: all.")] = None,
) -> None:
    """Meta-train the metanetwork on the population's train networks, selecting on its val networks."""
    from metaprune.meta.training import MetaTrainConfig
    from metaprune.workflows.meta_training import prepare_meta_training

    config = MetaTrainConfig(hidden=hidden, layers=layers, epsilon=epsilon, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             lr=lr, sparsity_weight=sparsity_weight, target_keep=target_keep, val_speedup=val_speedup,
                             prune_aware_weight=prune_aware_weight, seed=seed)
    trainer = prepare_meta_training(population, out, config, image_size=image_size, resume=resume,
                                    overwrite=overwrite, include=include.split(",") if include else None,
                                    data=data, data_root=data_root, val_images=val_images)
    with logs.run_log(out, header=command_line()):
        if trainer.start_epoch:
            logs.logger.info("resuming at epoch %d", trainer.start_epoch)
        history = trainer.fit()
    for epoch, (task, sparsity, accuracy) in enumerate(zip(history.task_loss, history.sparsity_loss,
                                                            history.val_pruned_accuracy)):
        console.print(f"epoch {epoch}: task {task:.4f} sparsity {sparsity:.4f} "
                      f"val acc after {val_speedup:g}x pruning {accuracy:.4f}")
    console.print(f"best metanetwork: {out}/metanet.safetensors; curves: {out}/meta_report.json, meta_report.png")
