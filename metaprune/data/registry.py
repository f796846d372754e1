"""Datasets by name: :data:`DATASETS` and :func:`load_dataset`.

A loader returns :class:`DataSplits`. Embedded data sets take keyword options only; data sets
read from local files take the folder as their first argument ``root``. Add one with
``@DATASETS.register("name")`` on its loader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaprune.data.cifar import load_cifar10
from metaprune.data.digits import load_digits_splits
from metaprune.data.image_folder import load_cifar10_folder, load_image_folder
from metaprune.data.splits import DataSplits
from metaprune.errors import ConfigError, DataError
from metaprune.registry import Registry

#: Every data set loader by name, embedded first.
DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")
DATASETS.add("digits", load_digits_splits)
DATASETS.add("cifar10", load_cifar10)
DATASETS.add("imagefolder", load_image_folder)
DATASETS.add("cifar10-jpeg", load_cifar10_folder)


def reads_files(name: str) -> bool:
    """Whether data set ``name`` reads local files (its loader's first argument is ``root``)."""
    parameters = list(inspect.signature(DATASETS.get(name)).parameters)
    return bool(parameters) and parameters[0] == "root"


def load_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> DataSplits:
    """Load dataset ``name`` (see :data:`DATASETS`) as :class:`DataSplits`.

    ``digits`` is embedded and takes no ``root``; the others read local files under ``root``.
    ``kwargs`` go to the loader (``image_size``, ``seed``, ``augment``, ...).

    Raises:
        ConfigError: unknown name, a ``root`` given for an embedded data set, or options the loader does not take.
        DataError: ``root`` missing, or missing/malformed files under it.
    """
    loader = DATASETS.get(name)
    if not reads_files(name):
        if root is not None:
            raise ConfigError(f"the {name} dataset is embedded and takes no root")
        arguments: tuple[Any, ...] = ()
    else:
        if root is None:
            raise DataError(f"dataset {name!r} reads local files: pass root=<folder>")
        if not Path(root).exists():
            raise DataError(f"dataset root {root} does not exist")
        arguments = (root,)
    try:
        inspect.signature(loader).bind(*arguments, **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for dataset {name!r}: {error}") from error
    return loader(*arguments, **kwargs)
