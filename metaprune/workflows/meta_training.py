"""``metaprune meta`` as jobs: train a population of networks, then meta-train the metanetwork on it.

:func:`train_population` builds (or completes) a population on the embedded digits;
:func:`prepare_meta_training` checks the options and ``out``, reads the population, keeps the
networks that ``include`` selects, refuses to overwrite an existing folder unless it resumes the
run in it, and returns the :class:`MetaTrainer` whose
:meth:`~metaprune.meta.training.MetaTrainer.fit` runs the remaining epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

from metaprune.data import DataSplits, load_digits_splits
from metaprune.errors import ConfigError
from metaprune.meta.population import PopulationNetwork, build_population, read_population
from metaprune.meta.training import CHECKPOINT, MetaTrainConfig, MetaTrainer
from metaprune.rundir import check_out_dir


def population_splits(image_size: int, seed: int) -> DataSplits:
    """The digits splits a population is trained on and meta-training reads (same ``image_size`` and ``seed``)."""
    return load_digits_splits(image_size=image_size, seed=seed)


def train_population(out: str | Path, *, architectures: Sequence[str], widths: Sequence[float],
                     seeds_per_spec: int = 2, epochs: int = 8, image_size: int = 16, seed: int = 0,
                     progress: bool = True) -> list[PopulationNetwork]:
    """Train the population into ``out`` (resumable: networks already there are kept)."""
    check_out_dir(out, resumable=True)
    return build_population(out, population_splits(image_size, seed), architectures=list(architectures),
                            widths=list(widths), seeds_per_spec=seeds_per_spec, epochs=epochs, seed=seed,
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
                          image_size: int = 16, include: Sequence[str] | None = None,
                          resume: bool = False, overwrite: bool = False) -> MetaTrainer:
    """A meta-trainer over the population's (selected) networks, resumed from ``out`` if ``resume``.

    Its ``start_epoch`` is above zero when it continues an interrupted run; ``overwrite`` starts
    afresh in a non-empty ``out``, replacing its checkpoint.

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
    trainer = MetaTrainer(config, population, networks, population_splits(image_size, config.seed), out)
    if resume:
        trainer.resume()
    return trainer
