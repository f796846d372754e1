"""``metaprune meta zoo`` and ``metaprune meta train`` (also reachable as ``python train_meta.py zoo|train``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from metaprune.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Build a model zoo and meta-train the graph metanetwork.")
console = Console()


def _splits(image_size: int, seed: int):
    from metaprune.data import load_digits_splits

    return load_digits_splits(image_size=image_size, seed=seed)


@app.command()
def zoo(
    out: Annotated[str, typer.Option(help="Folder for the networks and zoo.json.")] = "runs/meta-zoo",
    architectures: Annotated[str, typer.Option(help="Comma-separated registry names.")] = "resnet20,vgg11,mlp",
    widths: Annotated[str, typer.Option(help="Comma-separated width multipliers (ResNet/VGG).")] = "0.5,0.75,1.0",
    seeds_per_spec: Annotated[int, typer.Option(help="Networks per architecture x width.")] = 2,
    epochs: Annotated[int, typer.Option(help="Training epochs per network.")] = 8,
    image_size: Annotated[int, typer.Option(help="Digits image size.")] = 16,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
) -> None:
    """Train the data model zoo on the embedded digits (resumable: finished networks are kept)."""
    from metaprune.meta.model_zoo import build_model_zoo

    try:
        width_values = [float(value) for value in widths.split(",")]
    except ValueError as error:
        raise ConfigError(f"--widths must be comma-separated numbers, got {widths!r}") from error
    networks = build_model_zoo(out, _splits(image_size, seed), architectures=architectures.split(","),
                               widths=width_values, seeds_per_spec=seeds_per_spec, epochs=epochs, seed=seed)
    for network in networks:
        console.print(f"{network.name:28s} {network.split:5s} val {network.val_accuracy:.4f} test {network.test_accuracy:.4f}")
    console.print(f"wrote {len(networks)} networks and zoo.json to {out}")


@app.command()
def train(
    zoo: Annotated[str, typer.Option("--zoo", help="Model zoo folder (from `zoo`).")] = "runs/meta-zoo",
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
    image_size: Annotated[int, typer.Option(help="Digits image size (as the zoo).")] = 16,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    include: Annotated[str | None, typer.Option(help="Comma-separated glob patterns of zoo network names to use "
                                                   "(e.g. 'resnet20-*,vgg11-w0.5-*'); default: all.")] = None,
) -> None:
    """Meta-train the metanetwork on the zoo's train networks, selecting on its val networks."""
    from pathlib import Path

    from metaprune.meta.model_zoo import read_model_zoo
    from metaprune.meta.training import STATE, MetaTrainConfig, MetaTrainer

    config = MetaTrainConfig(hidden=hidden, layers=layers, epsilon=epsilon, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             lr=lr, sparsity_weight=sparsity_weight, target_keep=target_keep, val_speedup=val_speedup,
                             seed=seed)
    if (Path(out) / STATE).is_file() and not resume:
        raise ConfigError(f"{out} already holds a meta-training run: pass --resume to continue it or choose another --out")
    networks = read_model_zoo(zoo)
    if include:
        from fnmatch import fnmatch

        patterns = include.split(",")
        networks = [network for network in networks if any(fnmatch(network.name, pattern) for pattern in patterns)]
        if not networks:
            raise ConfigError(f"--include {include!r} matches no network of {zoo}")
    trainer = MetaTrainer(config, zoo, networks, _splits(image_size, seed), out)
    if resume and trainer.resume():
        console.print(f"resuming at epoch {trainer.start_epoch}")
    history = trainer.fit()
    for epoch, (task, sparsity, accuracy) in enumerate(zip(history.task_loss, history.sparsity_loss,
                                                            history.val_pruned_accuracy)):
        console.print(f"epoch {epoch}: task {task:.4f} sparsity {sparsity:.4f} "
                      f"val acc after {val_speedup:g}x pruning {accuracy:.4f}")
    console.print(f"best metanetwork: {out}/metanet.safetensors; curves: {out}/meta_report.json, meta_report.png")
