"""The :class:`DataSplits` container and the preprocessing every dataset loader shares.

Loaders turn their raw images into float tensors in ``[0, 1]`` and call :func:`build_splits`,
which resizes (bilinear), normalises with the *training* split's per-channel statistics

    x' = (x - mean_train) / std_train

and wraps each split in an :class:`ImageTensorDataset`. Validation is for every selection
decision (early stopping, search); test is only for reporting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from metaprune.errors import ConfigError, DataError

# Fraction of the image side by which training images are randomly shifted when augmenting.
TRANSLATION_FRACTION = 1 / 8


class ImageTensorDataset(Dataset):
    """Images held in memory as one ``N x C x H x W`` float tensor, with integer labels.

    With ``max_shift > 0`` every access returns the image translated by up to ``max_shift``
    pixels in each direction (zero padding, i.e. the training mean after normalisation, then a
    crop back to ``H x W``). The shift is drawn from a generator seeded by
    ``(seed, epoch, index)``, so a sample's augmentation is reproducible; call
    :meth:`set_epoch` at the start of each epoch to draw new shifts.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 0, seed: int = 0) -> None:
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise DataError(f"expected images N x C x H x W and N labels, got {tuple(images.shape)} "
                            f"and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.max_shift = max_shift
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.max_shift > 0:
            image = self._translate(image, index)
        return image, int(self.labels[index])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without augmentation)."""
        self.epoch = epoch

    def without_augmentation(self) -> ImageTensorDataset:
        """The same images and labels, never augmented (shares the tensors)."""
        return ImageTensorDataset(self.images, self.labels)

    def _translate(self, image: torch.Tensor, index: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        top, left = rng.integers(0, 2 * self.max_shift + 1, size=2)
        height, width = image.shape[-2:]
        padded = F.pad(image, (self.max_shift,) * 4)
        return padded[:, top:top + height, left:left + width]


@dataclass
class DataSplits:
    """Train/val/test datasets of ``(image C x H x W float tensor, int label)`` pairs.

    ``mean``/``std`` are the per-channel training statistics used for normalisation.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)


def check_image_size(image_size: int) -> None:
    """Raise ConfigError unless ``image_size`` is a positive integer."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded partition of ``range(len(labels))`` into sorted train/val/test indices.

    ``test_fraction`` may be 0 (the dataset has its own test set); then test is empty.
    The same labels and seed always give the same partition.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {fraction!r}")
    if val_fraction == 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"need 0 < val_fraction and val_fraction + test_fraction < 1, got "
                          f"{val_fraction} and {test_fraction}")
    indices = np.arange(len(labels))
    try:
        rest, test = (indices, indices[:0]) if test_fraction == 0 else train_test_split(
            indices, test_size=test_fraction, stratify=labels, random_state=seed)
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                      stratify=labels[rest], random_state=seed)
    except ValueError as error:
        raise DataError(f"cannot make a stratified split of {len(labels)} samples in "
                        f"{len(np.unique(labels))} classes ({error}); add images or change the fractions") from error
    return np.sort(train), np.sort(val), np.sort(test)


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bilinear resize of ``N x C x H x W`` images to ``image_size x image_size`` (antialiased)."""
    if images.shape[-2:] == (image_size, image_size):
        return images
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False,
                         antialias=True)


def build_splits(name: str, splits: Sequence[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                 image_size: int, augment: bool, seed: int) -> DataSplits:
    """Resize, normalise with train statistics and wrap ``[(images, labels)] * 3`` (train, val, test).

    ``images`` are float ``N x C x H x W`` in ``[0, 1]``; ``labels`` are integer class ids.
    """
    check_image_size(image_size)
    resized = [(resize_images(images.float(), image_size), labels.long()) for images, labels in splits]
    train_images = resized[0][0]
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    max_shift = max(1, round(image_size * TRANSLATION_FRACTION)) if augment else 0
    train, val, test = (
        ImageTensorDataset((images - mean) / std, labels, max_shift=max_shift if position == 0 else 0, seed=seed)
        for position, (images, labels) in enumerate(resized)
    )
    return DataSplits(train=train, val=val, test=test, num_classes=num_classes,
                      in_channels=train_images.shape[1], image_size=image_size, name=name,
                      mean=tuple(mean.flatten().tolist()), std=tuple(std.flatten().tolist()))
