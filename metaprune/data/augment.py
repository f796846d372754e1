"""Images kept as uint8 tensors, augmented and normalised a whole batch at a time.

The standard CIFAR augmentation (He et al., 2016): pad each side by ``pad`` pixels with zeros,
take a random ``H x W`` crop, flip it horizontally with probability 1/2. For a batch it is one
gather: output pixel ``(i, j)`` of image ``b`` is padded pixel

    (top_b + i,  left_b + j)              or, when flipped,   (top_b + i,  left_b + W - 1 - j)

with ``top_b, left_b`` uniform in ``0..2 pad``. Normalisation then maps ``x`` in ``0..255`` to
``(x / 255 - mean) / std`` with the training split's per-channel statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from metaprune.errors import DataError

#: Pixels of zero padding on each side before the random crop (CIFAR standard: 4 at 32x32).
CROP_PADDING = 4


def pad_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None = None, *,
                  offsets: torch.Tensor | None = None, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Randomly padded-cropped and flipped copies of ``images`` (``B x C x H x W``, any dtype).

    Draws ``offsets`` (``B x 2``: top, left in ``0..2 pad``) and ``flips`` (``B`` booleans) from
    ``generator`` unless they are given.
    """
    batch, channels, height, width = images.shape
    if offsets is None:
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    if flips is None:
        flips = torch.randint(0, 2, (batch,), generator=generator).bool()
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    rows = offsets[:, :1] + torch.arange(height)  # B x H
    columns = torch.arange(width).expand(batch, width)
    columns = offsets[:, 1:] + torch.where(flips[:, None], columns.flip(1), columns)  # B x W
    batch_index = torch.arange(batch)[:, None, None, None]
    channel_index = torch.arange(channels)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], columns[:, None, None, :]]


class UInt8ImageDataset(Dataset):
    """Images as one ``N x C x H x W`` uint8 tensor, normalised (and augmented) when read.

    Item ``i`` is ``(normalised float image C x H x W, int label)``; with ``augment`` its crop
    and flip are drawn from ``(seed, epoch, i)`` (see :meth:`set_epoch`). Whole batches are
    much faster through :meth:`batch`, which :func:`metaprune.data.make_loaders` uses.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 *, augment: bool = False, seed: int = 0, channels_last: bool = False) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
            raise DataError(f"expected uint8 images N x C x H x W and N labels, got {images.dtype} "
                            f"{tuple(images.shape)} and {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise DataError(f"mean and std need one value per channel ({images.shape[1]}), got {mean} and {std}")
        self.images = images
        self.labels = labels.long()
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.channels_last = channels_last
        std_tensor = torch.tensor(std).view(1, -1, 1, 1)
        # x' = x * scale + shift  ==  (x / 255 - mean) / std
        self._scale = 1.0 / (255.0 * std_tensor)
        self._shift = -torch.tensor(mean).view(1, -1, 1, 1) / std_tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # negative indices count from the end, as for tensors
        image = self.images[index].unsqueeze(0)
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            offsets = torch.from_numpy(rng.integers(0, 2 * CROP_PADDING + 1, size=(1, 2)))
            flips = torch.from_numpy(rng.integers(0, 2, size=1).astype(bool))
            image = pad_crop_flip(image, CROP_PADDING, offsets=offsets, flips=flips)
        return self.normalise(image, channels_last=False)[0], int(self.labels[index])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` for item access (batches draw from their loader)."""
        self.epoch = epoch

    def without_augmentation(self) -> UInt8ImageDataset:
        """The same images and labels, never augmented (shares the tensors)."""
        return UInt8ImageDataset(self.images, self.labels, self.mean, self.std, channels_last=self.channels_last)

    def normalise(self, images: torch.Tensor, *, channels_last: bool | None = None) -> torch.Tensor:
        """uint8 ``B x C x H x W`` images as normalised floats (channels-last memory if asked)."""
        channels_last = self.channels_last if channels_last is None else channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        floats = images.to(dtype=torch.float32, memory_format=memory_format)
        return floats.mul_(self._scale).add_(self._shift)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels of ``indices``, augmented with draws from ``generator`` if ``augment``."""
        images = self.images[indices]
        if self.augment:
            images = pad_crop_flip(images, CROP_PADDING, generator)
        return self.normalise(images), self.labels[indices]


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``N x C x H x W`` images, on the ``[0, 1]`` scale (exact: from histograms)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).to(torch.float64)
        mean = float((counts * values).sum() / counts.sum())
        variance = float((counts * (values - mean).square()).sum() / counts.sum())
        means.append(mean)
        stds.append(max(variance, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)
