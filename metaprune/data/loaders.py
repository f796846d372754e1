"""Loaders over :class:`DataSplits` and a fixed calibration batch.

Splits held as uint8 tensors (:class:`~metaprune.data.augment.UInt8ImageDataset`) are served by
:class:`TensorBatchLoader`, which gathers, augments and normalises a whole batch with a few
tensor operations instead of one Python call per image; other datasets get a ``DataLoader``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from metaprune.data.augment import UInt8ImageDataset
from metaprune.data.splits import DataSplits, ImageTensorDataset
from metaprune.errors import ConfigError


def _check_non_negative_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


class TensorBatchLoader:
    """Batches of a :class:`UInt8ImageDataset`: ``(normalised float images, labels)``, like a ``DataLoader``.

    With ``shuffle`` every pass draws a new permutation, and the dataset's augmentation its
    crops and flips, from ``generator``: the same seed gives the same sequence of batches.
    """

    def __init__(self, dataset: UInt8ImageDataset, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> None:
        _check_non_negative_int("batch_size", batch_size, 1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.dataset)
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        for start in range(0, count, self.batch_size):
            yield self.dataset.batch(order[start:start + self.batch_size], self.generator)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None,
            num_workers: int) -> DataLoader | TensorBatchLoader:
    if isinstance(dataset, UInt8ImageDataset):
        return TensorBatchLoader(dataset, batch_size, shuffle=shuffle, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)


def make_loaders(splits: DataSplits, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0) -> tuple[DataLoader | TensorBatchLoader, ...]:
    """(train, val, test) loaders; only train shuffles, with a generator seeded by ``seed``.

    The same seed gives the same sequence of training batches. uint8 splits get
    :class:`TensorBatchLoader` s (``num_workers`` does not apply to them).
    """
    _check_non_negative_int("batch_size", batch_size, 1)
    _check_non_negative_int("num_workers", num_workers, 0)
    generator = torch.Generator().manual_seed(seed)
    train = _loader(splits.train, batch_size, True, generator, num_workers)
    val, test = (_loader(dataset, batch_size, False, None, num_workers) for dataset in (splits.val, splits.test))
    return train, val, test


def calibration_batch(splits: DataSplits, n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct training samples chosen with ``seed``, as ``(x: n x C x H x W, y: n)`` tensors.

    Augmentation is not applied, so the batch is the same on every call with the same seed.
    """
    _check_non_negative_int("n", n, 1)
    dataset: Dataset = splits.train
    if isinstance(dataset, ImageTensorDataset | UInt8ImageDataset):
        dataset = dataset.without_augmentation()
    if n > len(dataset):
        raise ConfigError(f"calibration batch of {n} samples asked, but the train split has only {len(dataset)}")
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    images, labels = zip(*(dataset[int(index)] for index in chosen), strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
