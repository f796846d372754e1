"""The population for meta-training: many small networks trained on one data set.

``build_population`` trains networks of several architectures and widths with different seeds
and saves each as ``<name>.safetensors`` (with its spec, the data set's name and metrics as
metadata) plus a ``population.json`` index. The data set is the embedded digits by default, or
any data set of :mod:`metaprune.data` (CIFAR-10 for a CIFAR metanetwork); a folder holds the
networks of one data set only. A fixed share of the networks is held out for validation of the
metanetwork; selection never looks at the test split. (The population is not the published
model zoo, :mod:`metaprune.zoo`.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field, RootModel
from torch import nn

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError, WeightsError
from metaprune.logs import progress_bar
from metaprune.models import create_model, create_model_from_spec, model_spec
from metaprune.rundir import write_json
from metaprune.schemas import StrictModel, parse_file
from metaprune.specs import TrainingSpec
from metaprune.train import evaluate, fit, load_state, save_state, seed_everything

INDEX = "population.json"
#: Largest width multiplier, networks per spec and epochs a population may ask for.
MAX_WIDTH, MAX_SEEDS_PER_SPEC, MAX_EPOCHS = 4.0, 100, 1000


@dataclass
class PopulationNetwork:
    """One trained network of the population."""

    name: str
    spec: dict
    split: str
    seed: int
    val_accuracy: float
    test_accuracy: float
    data: str = "digits"

    def load(self, root: str | Path) -> nn.Module:
        """The trained network, in eval mode."""
        model = create_model_from_spec(self.spec)
        load_state(Path(root) / f"{self.name}.safetensors", model)
        return model.eval()


def population_specs(architectures: list[str], widths: list[float], image_size: int, num_classes: int,
                     in_channels: int) -> list[dict]:
    """Model specs for every architecture × width (width applies to models that take one)."""
    specs = []
    for architecture in architectures:
        for width in widths:
            kwargs = {"width": width} if architecture.startswith(("resnet", "vgg")) else {}
            model = create_model(architecture, num_classes=num_classes, in_channels=in_channels,
                                 image_size=image_size, **kwargs)
            specs.append(model_spec(model))
            if not kwargs:
                break  # no width option: one variant
    return specs


def build_population(
    out: str | Path,
    splits: DataSplits,
    *,
    architectures: list[str],
    widths: list[float],
    seeds_per_spec: int = 2,
    epochs: int = 8,
    val_fraction: float = 0.25,
    seed: int = 0,
    data: str = "digits",
    weights: str | Path | None = None,
    lr: float | None = None,
    progress: bool = True,
) -> list[PopulationNetwork]:
    """Train ``seeds_per_spec`` networks per architecture × width; existing networks are kept (resumable).

    ``data`` is the name of the data set ``splits`` come from, recorded with every network.
    ``weights`` (a safetensors file of one architecture x width) starts every network from those
    trained weights instead of a random initialisation: a population of fine-tuned siblings of one
    model, each with its own seed (batch order); ``lr`` defaults to the fine-tuning rate then
    (the dense rate otherwise).

    Raises:
        ConfigError: a width outside (0, 4], counts outside their bounds, ``val_fraction`` outside (0, 1),
            ``lr`` not a positive finite number, or ``out`` already holds networks trained on another data set.
        WeightsError: ``weights`` missing, corrupt or not of every requested architecture x width.
    """
    bad_widths = [width for width in widths if not (math.isfinite(width) and 0 < width <= MAX_WIDTH)]
    if bad_widths or not widths:
        raise ConfigError(f"--widths must be numbers in (0, {MAX_WIDTH:g}], got {list(widths)}")
    if not (1 <= seeds_per_spec <= MAX_SEEDS_PER_SPEC and 1 <= epochs <= MAX_EPOCHS
            and math.isfinite(val_fraction) and 0 < val_fraction < 1):
        raise ConfigError(f"need 1 <= --seeds-per-spec <= {MAX_SEEDS_PER_SPEC}, 1 <= --epochs <= {MAX_EPOCHS} and "
                          f"0 < val_fraction < 1; got {seeds_per_spec}, {epochs}, {val_fraction}")
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= 10):
        raise ConfigError(f"--lr must be a number in (0, 10], got {lr}")
    out = Path(out)
    specs = population_specs(architectures, widths, splits.image_size, splits.num_classes, splits.in_channels)
    jobs = [(spec, seed + 1000 * index + repeat) for index, spec in enumerate(specs) for repeat in range(seeds_per_spec)]
    val_every = max(2, round(1 / val_fraction))
    if weights is not None:
        for spec in specs:  # every network must start from them: check before anything is trained or written
            load_state(weights, create_model_from_spec(spec))
    out.mkdir(parents=True, exist_ok=True)
    training = TrainingSpec.finetune(epochs, lr=lr) if weights is not None else TrainingSpec.dense(epochs, lr=lr)
    existing = {network.name: network for network in read_population(out)} if (out / INDEX).is_file() else {}
    other = sorted({network.data for network in existing.values()} - {data})
    if other:
        raise ConfigError(f"{out} holds networks trained on {', '.join(other)}, not {data}: "
                          "use another --out for a population of another data set")
    networks = []
    train_loader, val_loader, test_loader = make_loaders(splits, batch_size=training.batch_size, seed=seed)
    with progress_bar("population", len(jobs), enabled=progress) as bar:
        for position, (spec, network_seed) in enumerate(jobs):
            width = spec["kwargs"].get("width")
            name = f"{spec['name']}{'-w' + format(width, 'g') if width else ''}-s{network_seed}"
            split = "val" if position % val_every == val_every - 1 else "train"
            if name in existing and (out / f"{name}.safetensors").is_file():
                networks.append(existing[name])
            else:
                seed_everything(network_seed)
                model = create_model_from_spec(spec)
                if weights is not None:
                    load_state(weights, model)
                fit(model, train_loader, epochs=training.epochs, lr=training.lr_for(spec["name"]),
                    optimizer=training.optimizer_for(spec["name"]), progress=False)
                network = PopulationNetwork(name, spec, split, network_seed, evaluate(model, val_loader),
                                            evaluate(model, test_loader), data)
                save_state(out / f"{name}.safetensors", model, metadata=asdict(network))
                networks.append(network)
                _write_index(out, networks)
            bar.advance(status=name)
    _write_index(out, networks)
    return networks


def _write_index(out: Path, networks: list[PopulationNetwork]) -> None:
    write_json(out / INDEX, [asdict(network) for network in networks])


class _NetworkRecord(StrictModel):
    """One entry of ``population.json``."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    spec: dict[str, Any]
    split: Annotated[str, Field(pattern="^(train|val)$")]
    seed: int
    val_accuracy: Annotated[float, Field(ge=0, le=1)]
    test_accuracy: Annotated[float, Field(ge=0, le=1)]
    data: Annotated[str, Field(min_length=1, max_length=100)] = "digits"


class _PopulationIndex(RootModel[list[_NetworkRecord]]):
    """``population.json``: the list of networks."""


def read_population(root: str | Path) -> list[PopulationNetwork]:
    """The networks listed in ``root/population.json``."""
    path = Path(root) / INDEX
    if not path.is_file():
        raise WeightsError(f"no population at {root}: {INDEX} is missing "
                           "(build one with `metaprune meta population`)")
    index = parse_file(_PopulationIndex, path, WeightsError)
    return [PopulationNetwork(**record.model_dump()) for record in index.root]


def example_input_for(splits: DataSplits) -> torch.Tensor:
    """A one-image batch shaped like the population's inputs."""
    return splits.test[0][0].unsqueeze(0)
