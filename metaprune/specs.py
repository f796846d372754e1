"""The options vocabulary shared by prune, search and meta-training: small frozen specs.

A job composes them instead of re-declaring their fields:

* :class:`TaskSpec`: which model on which data (model, its options, data set, data root,
  input size, seed), and how to build both;
* :class:`TrainingSpec`: how to train (epochs, optimiser, learning rate, batch size); a
  learning rate or optimiser left unset takes the documented default of its stage;
* the budget (:class:`metaprune.prune.budget.Budget`) and the pruning spec
  (:class:`metaprune.prune.spec.PruningSpec`) live with the engine that reads them.

Specs are frozen: a run never changes its options while it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from metaprune.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from metaprune.data import DataSplits

OPTIMIZERS = ("sgd", "adamw")
#: More epochs than any run here needs: a larger value is a typo that would run for days.
MAX_EPOCHS = 10_000
Stage = Literal["dense", "finetune"]

#: Default learning rate per stage and optimiser: SGD with Nesterov momentum for CNNs and
#: MLPs, AdamW for vision transformers (which SGD at these rates does not train).
DEFAULT_LR: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "dense": MappingProxyType({"sgd": 0.05, "adamw": 2e-3}),
    "finetune": MappingProxyType({"sgd": 0.01, "adamw": 5e-4}),
})


def default_optimizer(model_name: str) -> str:
    """AdamW for vision transformers (registry names starting with ``vit``), SGD otherwise."""
    return "adamw" if model_name.startswith("vit") else "sgd"


@dataclass(frozen=True)
class TaskSpec:
    """Which model on which data: everything that fixes the task a job works on.

    ``model_kwargs`` are the architecture options of the registered model (e.g. ``width``);
    ``seed`` fixes the data split, the initialisation and every later random choice.
    """

    model: str = "resnet20"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    image_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or not 1 <= self.image_size <= 4096:
            raise ConfigError(f"image size must be an integer in [1, 4096], got {self.image_size!r}")
        for key, value in dict(self.model_kwargs).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"model option {key} must be a finite number, got {value}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))  # a private copy (picklable)

    def load_splits(self) -> DataSplits:
        """The seeded train/val/test splits of the data set."""
        from metaprune.data import load_dataset

        return load_dataset(self.data, root=self.data_root, image_size=self.image_size, seed=self.seed)

    def build_model(self, splits: DataSplits) -> nn.Module:
        """A fresh (untrained) model shaped for ``splits`` (classes, channels, image size)."""
        from metaprune.models import create_model

        return create_model(self.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
                            image_size=splits.image_size, **self.model_kwargs)

    def load_model(self, weights: str | Path, splits: DataSplits) -> nn.Module:
        """The model with its state dict read from a safetensors file."""
        from metaprune.train import load_state

        model = self.build_model(splits)
        load_state(Path(weights), model)
        return model


@dataclass(frozen=True)
class TrainingSpec:
    """How to train: epochs, optimiser (``sgd``/``adamw``), learning rate and batch size.

    ``optimizer=None`` picks :func:`default_optimizer` for the model; ``lr=None`` picks
    :data:`DEFAULT_LR` for the ``stage`` (dense training or fine-tuning) and the optimiser.
    """

    epochs: int
    stage: Stage = "dense"
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 0 <= self.epochs <= MAX_EPOCHS:
            flag = "--epochs" if self.stage == "dense" else "--finetune-epochs"
            raise ConfigError(f"{flag} must be an integer >= 0 (at most {MAX_EPOCHS}), got {self.epochs!r}")
        if self.stage not in DEFAULT_LR:
            raise ConfigError(f"unknown training stage {self.stage!r}; choose one of {', '.join(DEFAULT_LR)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.lr}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size!r}")

    @classmethod
    def dense(cls, epochs: int = 12, **options: Any) -> TrainingSpec:
        """Dense training (default 12 epochs: the digits task)."""
        return cls(epochs, stage="dense", **options)

    @classmethod
    def finetune(cls, epochs: int = 4, **options: Any) -> TrainingSpec:
        """Fine-tuning after pruning (default 4 epochs)."""
        return cls(epochs, stage="finetune", **options)

    def optimizer_for(self, model_name: str) -> str:
        """The optimiser to use for ``model_name``."""
        return self.optimizer or default_optimizer(model_name)

    def lr_for(self, model_name: str) -> float:
        """The learning rate to use for ``model_name`` (explicit, else the stage's default)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.stage][self.optimizer_for(model_name)]
