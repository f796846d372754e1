"""``metaprune meta`` as jobs: train a population of networks, then meta-train the metanetwork on it.

:func:`train_population` builds (or completes) a population on the embedded digits or on any
data set of :mod:`metaprune.data` (``--data cifar10-jpeg --data-root DIR`` for CIFAR-10);
:func:`prepare_meta_training` checks the options and ``out``, reads the population, keeps the
networks that ``include`` selects, refuses to overwrite an existing folder unless it resumes the
run in it, and returns the :class:`MetaTrainer` whose
:meth:`~metaprune.meta.training.MetaTrainer.fit` runs the remaining epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import torch

from metaprune.data import DataSplits, UInt8ImageDataset
from metaprune.data.registry import DATASETS, load_dataset, reads_files
from metaprune.errors import ConfigError
from metaprune.meta.population import PopulationNetwork, build_population, read_population
from metaprune.meta.training import CHECKPOINT, MetaTrainConfig, MetaTrainer
from metaprune.rundir import check_out_dir

#: Side length each data set is read at unless ``image_size`` is given (digits are resized from 8x8).
DEFAULT_IMAGE_SIZE = {"digits": 16}
FILE_IMAGE_SIZE = 32


def default_image_size(data: str) -> int:
    """16 for the embedded digits, 32 (CIFAR) for data sets read from files."""
    return DEFAULT_IMAGE_SIZE.get(data, FILE_IMAGE_SIZE)


def _first(dataset: torch.utils.data.Dataset, count: int | None, seed: int) -> torch.utils.data.Dataset:
    """``count`` items of ``dataset`` chosen with ``seed`` (all of it when ``count`` is None or larger)."""
    if count is None or count >= len(dataset):
        return dataset
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    if isinstance(dataset, UInt8ImageDataset):
        return UInt8ImageDataset(dataset.images[chosen], dataset.labels[chosen], dataset.mean, dataset.std,
                                 augment=dataset.augment, seed=dataset.seed, channels_last=dataset.channels_last)
    return torch.utils.data.Subset(dataset, chosen.tolist())


def population_splits(image_size: int | None, seed: int, *, data: str = "digits", data_root: str | Path | None = None,
                      train_images: int | None = None, val_images: int | None = None) -> DataSplits:
    """The splits a population is trained on and meta-training reads (same data, ``image_size`` and ``seed``).

    ``data`` is a data set of :mod:`metaprune.data` (``digits`` embedded; ``cifar10-jpeg``,
    ``cifar10`` and ``imagefolder`` read ``data_root``); ``train_images`` / ``val_images`` keep a
    fixed, seeded subset of the training / validation split (short population training, fast
    meta-validation). The test split is never cut and never used for selection.

    Raises:
        ConfigError: an unknown data set, a missing or superfluous ``data_root``, subset sizes below 1.
        DataError: ``data_root`` lacks the files the data set needs (``train/`` and ``test/`` for cifar10-jpeg).
    """
    DATASETS.get(data)  # unknown name: ConfigError with a did-you-mean
    if reads_files(data) and data_root is None:
        raise ConfigError(f"--data {data} reads local files: pass --data-root DIR (e.g. a folder with train/ and test/)")
    if not reads_files(data) and data_root is not None:
        raise ConfigError(f"--data {data} is embedded and takes no --data-root")
    for flag, count in (("--train-images", train_images), ("--val-images", val_images)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError(f"{flag} must be a positive integer, got {count!r}")
    size = default_image_size(data) if image_size is None else image_size
    splits = load_dataset(data, root=data_root, image_size=size, seed=seed)
    splits.train = _first(splits.train, train_images, seed + 1)
    splits.val = _first(splits.val, val_images, seed + 2)
    return splits


def train_population(out: str | Path, *, architectures: Sequence[str], widths: Sequence[float],
                     seeds_per_spec: int = 2, epochs: int = 8, image_size: int | None = None, seed: int = 0,
                     data: str = "digits", data_root: str | Path | None = None, train_images: int | None = None,
                     val_images: int | None = None, weights: str | Path | None = None, lr: float | None = None,
                     progress: bool = True) -> list[PopulationNetwork]:
    """Train the population into ``out`` (resumable: networks already there are kept).

    ``weights``: every network starts from these trained weights (fine-tuned siblings of one model).
    """
    check_out_dir(out, resumable=True)
    splits = population_splits(image_size, seed, data=data, data_root=data_root, train_images=train_images,
                               val_images=val_images)
    return build_population(out, splits, architectures=list(architectures), widths=list(widths),
                            seeds_per_spec=seeds_per_spec, epochs=epochs, seed=seed, data=data, weights=weights, lr=lr,
                            progress=progress)


def select_networks(networks: list[PopulationNetwork], include: Sequence[str] | None,
                    population: str | Path) -> list[PopulationNetwork]:
    """The networks whose name matches one of the glob patterns ``include`` (all of them if ``None``)."""
    if not include:
        return networks
    selected = [network for network in networks if any(fnmatch(network.name, pattern) for pattern in include)]
    if not selected:
        raise ConfigError(f"--include {','.join(include)!r} matches no network of {population}")
    return selected


def prepare_meta_training(population: str | Path, out: str | Path, config: MetaTrainConfig, *,
                          image_size: int | None = None, include: Sequence[str] | None = None,
                          resume: bool = False, overwrite: bool = False, data: str | None = None,
                          data_root: str | Path | None = None, val_images: int | None = None) -> MetaTrainer:
    """A meta-trainer over the population's (selected) networks, resumed from ``out`` if ``resume``.

    Its ``start_epoch`` is above zero when it continues an interrupted run; ``overwrite`` starts
    afresh in a non-empty ``out``, replacing its checkpoint. ``data`` defaults to the data set the
    population was trained on; another one is an error. ``val_images`` cuts the validation split
    the held-out networks are scored on each epoch (selection never reads test).

    Raises:
        ConfigError: bad options, or an ``out`` that cannot be written or (without ``resume`` or
            ``overwrite``) is not empty.
        WeightsError: a missing population, or (``resume``) a corrupt checkpoint in ``out``.
    """
    config.validate()
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if (Path(out) / CHECKPOINT).is_file() and not (resume or overwrite):
        raise ConfigError(f"{out} already holds a meta-training run: pass --resume to continue it, --overwrite to "
                          "start it again, or choose another --out")
    check_out_dir(out, overwrite=overwrite, resumable=resume)
    networks = select_networks(read_population(population), include, population)
    trained_on = sorted({network.data for network in networks})
    if data is None:
        if len(trained_on) > 1:
            raise ConfigError(f"{population} mixes networks of {', '.join(trained_on)}; pick one with --include")
        data = trained_on[0]
    elif trained_on != [data]:
        raise ConfigError(f"{population} was trained on {', '.join(trained_on)}, not --data {data}")
    splits = population_splits(image_size, config.seed, data=data, data_root=data_root, val_images=val_images)
    trainer = MetaTrainer(config, population, networks, splits, out)
    if resume:
        trainer.resume()
    return trainer
