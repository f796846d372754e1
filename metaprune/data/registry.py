"""Datasets by name: :func:`load_dataset`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaprune.data.cifar import load_cifar10
from metaprune.data.digits import load_digits_splits
from metaprune.data.image_folder import load_image_folder
from metaprune.data.splits import DataSplits
from metaprune.errors import ConfigError, DataError

_ROOTED_LOADERS: dict[str, Callable[..., DataSplits]] = {"cifar10": load_cifar10, "imagefolder": load_image_folder}
DATASET_NAMES = ("digits", *_ROOTED_LOADERS)


def load_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> DataSplits:
    """Load dataset ``name`` (``digits``, ``cifar10`` or ``imagefolder``) as :class:`DataSplits`.

    ``digits`` is embedded and takes no ``root``; the others read local files under ``root``.
    ``kwargs`` go to the loader (``image_size``, ``seed``, ``augment``, ...).

    Raises:
        ConfigError: unknown name, a ``root`` given for ``digits``, or options the loader does not take.
        DataError: ``root`` missing, or missing/malformed files under it.
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if name == "digits":
        if root is not None:
            raise ConfigError("the digits dataset is embedded in scikit-learn and takes no root")
        loader: Callable[..., DataSplits] = load_digits_splits
        arguments: tuple[Any, ...] = ()
    else:
        if root is None:
            raise DataError(f"dataset {name!r} reads local files: pass root=<folder>")
        if not Path(root).exists():
            raise DataError(f"dataset root {root} does not exist")
        loader, arguments = _ROOTED_LOADERS[name], (root,)
    try:
        inspect.signature(loader).bind(*arguments, **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for dataset {name!r}: {error}") from error
    return loader(*arguments, **kwargs)
