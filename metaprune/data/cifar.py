"""CIFAR-10 from the local *python* batches (``data_batch_1..5``, ``test_batch``).

The batches are pickles, and unpickling can run arbitrary code, so they are read with
:class:`RestrictedUnpickler`, which resolves only the numpy functions needed to rebuild arrays
and refuses every other global.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaprune.data.splits import DataSplits, build_splits, check_image_size, split_indices
from metaprune.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR_SUBDIRECTORY = "cifar-10-batches-py"
CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE
CIFAR_CLASSES = 10


def _array_reconstructors() -> dict[tuple[str, str], Any]:
    """The globals an ndarray pickle names, keyed by (module, name) as pickles spell them.

    The reconstruct functions are taken from numpy's own ``__reduce_ex__`` so that this works
    whether numpy calls its private module ``numpy.core`` (1.x) or ``numpy._core`` (2.x); both
    spellings occur in files written by either version.
    """
    reconstruct = np.ndarray(0).__reduce_ex__(2)[0]
    from_buffer = np.arange(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = from_buffer
    # Protocol-2 pickles written by Python 3 encode bytes objects through _codecs.encode.
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays and plain containers.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes) raises DataError.
    """

    allowed_globals = _array_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only if it is an allowed numpy reconstruction global."""
        try:
            return self.allowed_globals[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle global {module}.{name}: a CIFAR batch holds only "
                            "numpy arrays, lists and bytes") from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x 3 x 32 x 32`` uint8 and labels ``N`` int64 from one CIFAR-10 python batch file."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch file {path} not found; expected the python version "
                        f"({', '.join(TRAIN_BATCHES)}, {TEST_BATCH})")
    try:
        batch = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    except Exception as error:  # any unpickling failure means the file is not a CIFAR batch
        raise DataError(f"{path} is not a readable CIFAR-10 python batch ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: expected a dict with keys b'data' and b'labels'")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise DataError(f"{path}: b'data' must be uint8 of shape N x {CIFAR_PIXELS}, got "
                        f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min(initial=0) < 0 or labels.max(initial=0) >= CIFAR_CLASSES:
        raise DataError(f"{path}: b'labels' must be {data.shape[0]} integers in 0..{CIFAR_CLASSES - 1}")
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels.astype(np.int64)


def _batch_directory(root: str | Path) -> Path:
    root = Path(root)
    for directory in (root, root / CIFAR_SUBDIRECTORY):
        if (directory / TEST_BATCH).is_file():
            return directory
    raise DataError(f"no CIFAR-10 python batches under {root}: expected {root}/{TEST_BATCH} or "
                    f"{root}/{CIFAR_SUBDIRECTORY}/{TEST_BATCH} next to data_batch_1..5")


def load_cifar10(root: str | Path, image_size: int = 32, seed: int = 0, augment: bool = False,
                 val_fraction: float = 0.1) -> DataSplits:
    """CIFAR-10 from ``root`` or ``root/cifar-10-batches-py``.

    Validation is a stratified ``val_fraction`` of the five training batches (chosen with
    ``seed``); test is ``test_batch``. Preprocessing as in :func:`metaprune.data.splits.build_splits`.
    """
    check_image_size(image_size)
    directory = _batch_directory(root)
    train_parts = [read_batch(directory / name) for name in TRAIN_BATCHES]
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    test_images, test_labels = read_batch(directory / TEST_BATCH)
    train_index, val_index, _ = split_indices(train_labels, val_fraction, 0.0, seed)

    def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(images).float() / 255.0, torch.from_numpy(labels)

    return build_splits(
        "cifar10",
        [as_tensors(train_images[train_index], train_labels[train_index]),
         as_tensors(train_images[val_index], train_labels[val_index]),
         as_tensors(test_images, test_labels)],
        num_classes=CIFAR_CLASSES, image_size=image_size, augment=augment, seed=seed,
    )
