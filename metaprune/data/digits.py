"""The embedded default dataset: scikit-learn's handwritten digits (1,797 real 8x8 images).

Ships with scikit-learn, so it needs no download; pixel values are integers 0..16.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from metaprune.data.splits import DataSplits, build_splits, check_image_size, split_indices

DIGITS_MAX_VALUE = 16.0


def load_digits_splits(image_size: int = 16, seed: int = 0, augment: bool = False,
                       val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataSplits:
    """Digits as 1-channel ``image_size x image_size`` images in 10 classes.

    The stratified train/val/test partition depends only on ``seed`` and the fractions (not on
    ``image_size`` or ``augment``). Pixels are scaled to ``[0, 1]``, bilinearly resized and
    normalised with the training mean and std; ``augment`` adds random translations of up to
    1/8 of the image side to the training split only.
    """
    check_image_size(image_size)
    digits = load_digits()
    labels = digits.target
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_VALUE
    label_tensor = torch.as_tensor(labels)
    parts = split_indices(labels, val_fraction, test_fraction, seed)
    return build_splits("digits", [(images[part], label_tensor[part]) for part in parts],
                        num_classes=10, image_size=image_size, augment=augment, seed=seed)
