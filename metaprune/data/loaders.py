"""DataLoaders over :class:`DataSplits` and a fixed calibration batch."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from metaprune.data.splits import DataSplits, ImageTensorDataset
from metaprune.errors import ConfigError


def _check_non_negative_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_loaders(splits: DataSplits, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train, val, test) loaders; only train shuffles, with a generator seeded by ``seed``.

    The same seed gives the same sequence of training batches.
    """
    _check_non_negative_int("batch_size", batch_size, 1)
    _check_non_negative_int("num_workers", num_workers, 0)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=generator,
                       num_workers=num_workers)
    val, test = (DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
                 for dataset in (splits.val, splits.test))
    return train, val, test


def calibration_batch(splits: DataSplits, n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct training samples chosen with ``seed``, as ``(x: n x C x H x W, y: n)`` tensors.

    Augmentation is not applied, so the batch is the same on every call with the same seed.
    """
    _check_non_negative_int("n", n, 1)
    dataset: Dataset = splits.train
    if isinstance(dataset, ImageTensorDataset):
        dataset = dataset.without_augmentation()
    if n > len(dataset):
        raise ConfigError(f"calibration batch of {n} samples asked, but the train split has only {len(dataset)}")
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    images, labels = zip(*(dataset[int(index)] for index in chosen), strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
