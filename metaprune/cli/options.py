"""Command-line options declared once and reused by every command (prune, search, meta, ...).

Each alias is an ``Annotated`` type carrying its help text; a command uses it as the type of
a parameter and sets the default there, so ``--help`` shows the same words and the default
everywhere. The builders turn parsed options into the shared specs of :mod:`metaprune.specs`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from metaprune.errors import ConfigError
from metaprune.registry import Registry

Opt = typer.Option

#: The names of the built-in models, so that a misspelt ``--model`` is refused before torch loads
#: (a model module imports torch to register itself). tests/cli/test_startup.py checks it against
#: :func:`metaprune.models.list_models`: a newly registered model adds its name here.
BUILTIN_MODELS = ("mlp", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "vgg19", "vit_tiny")

# Output: how much a command says on stderr (the main callback's options).
Quiet = Annotated[bool, Opt("--quiet", "-q", help="Warnings and errors only; no progress bars.")]
Verbose = Annotated[bool, Opt("--verbose", "-v", help="Debug messages too.")]

# Task: which model on which data.
Model = Annotated[str, Opt(help="Registry name of the model (see `metaprune info list`), or your own factory: "
                                "path/to/file.py:make_net or package.module:make_net.")]
Width = Annotated[float | None, Opt(help="Width multiplier (ResNet/VGG); default: the model's own.")]
Data = Annotated[str, Opt(help="digits (embedded), cifar10, imagefolder or cifar10-jpeg (cached, augmented).")]
DataRoot = Annotated[str | None, Opt(help="Local path for cifar10 / imagefolder / cifar10-jpeg data.")]
ImageSize = Annotated[int, Opt(help="Input side length (digits are resized from 8x8).")]
Seed = Annotated[int, Opt(help="Seed for data split, training and pruning.")]

# Budget: exactly one of the two spellings.
BudgetRatio = Annotated[float | None, Opt("--budget", help="FLOPs ratio to keep, 0 < r <= 1.")]
Speedup = Annotated[float | None, Opt(help="FLOPs speed-up >= 1 (alternative to --budget).")]

# Training: dense training and fine-tuning.
Epochs = Annotated[int, Opt(help="Epochs to train the dense model.")]
FinetuneEpochs = Annotated[int, Opt(help="Fine-tuning epochs after pruning.")]
Lr = Annotated[float | None, Opt(help="Dense-training learning rate; default 0.05 with SGD, 2e-3 with AdamW.")]
FinetuneLr = Annotated[float | None, Opt(help="Fine-tuning learning rate; default 0.01 with SGD, 5e-4 with AdamW.")]
Optimizer = Annotated[str | None, Opt(help="sgd or adamw; default: adamw for ViTs, sgd otherwise.")]
BatchSize = Annotated[int, Opt(help="Training batch size.")]

# Pruning.
MinKeep = Annotated[float, Opt(help="Fraction of each group's channels always kept.")]
Weights = Annotated[str | None, Opt(help="Dense weights (.safetensors), or a prune/search run dir (its dense.safetensors); skips dense training.")]
Out = Annotated[str, Opt(help="Run directory for the job's files (an existing non-empty one needs --overwrite).")]
Overwrite = Annotated[bool, Opt(help="Replace the files of an existing run in --out.")]
Progress = Annotated[bool, Opt(help="Show progress bars.")]


def model_kwargs(width: float | None) -> dict[str, Any]:
    """The architecture options given on the command line (only ``--width`` today)."""
    return {} if width is None else {"width": width}


def parse_n_m(text: str) -> tuple[int, int]:
    """``"2:4"`` → ``(2, 4)``; ConfigError otherwise."""
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as error:
        raise ConfigError(f"--n-m must look like 2:4, got {text!r}") from error
    return n, m


def task_spec(model: str, width: float | None, data: str, data_root: str | None, image_size: int, seed: int) -> Any:
    """The :class:`~metaprune.specs.TaskSpec` of the task options.

    A factory reference in ``model`` is imported and checked against the options here, and a
    registry name against :data:`BUILTIN_MODELS`, so a bad ``--model`` fails before any data is
    loaded or any file written (a misspelt name before torch loads).
    """
    from metaprune.specs import TaskSpec

    if ":" in model:  # a factory reference (metaprune.models.references.is_reference)
        from metaprune.models import check_reference

        check_reference(model, model_kwargs(width))
    else:
        check_model_name(model)

    return TaskSpec(model=model, model_kwargs=model_kwargs(width), data=data, data_root=data_root,
                    image_size=image_size, seed=seed)


def check_model_name(model: str) -> None:
    """ConfigError, with the registry's did-you-mean message, unless ``model`` names a built-in model."""
    if model not in BUILTIN_MODELS:
        names: Registry[str] = Registry("model")
        for name in BUILTIN_MODELS:
            names.add(name, name)
        names.get(model)


def training_specs(epochs: int, finetune_epochs: int, lr: float | None, finetune_lr: float | None,
                   optimizer: str | None, batch_size: int) -> tuple[Any, Any]:
    """The dense-training and fine-tuning :class:`~metaprune.specs.TrainingSpec` of the training options."""
    from metaprune.specs import TrainingSpec

    return (TrainingSpec.dense(epochs, lr=lr, optimizer=optimizer, batch_size=batch_size),
            TrainingSpec.finetune(finetune_epochs, lr=finetune_lr, optimizer=optimizer, batch_size=batch_size))
