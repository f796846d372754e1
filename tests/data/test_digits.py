"""The embedded digits dataset: splits, preprocessing and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from metaprune.data import load_digits_splits
from metaprune.errors import ConfigError

DIGITS_COUNT = 1797


def labels_of(dataset) -> np.ndarray:
    return dataset.labels.numpy()


def find_indices(splits) -> list[np.ndarray]:
    """Recover each split's indices into load_digits() by matching the raw 8x8 images exactly."""
    raw = load_digits().images.reshape(DIGITS_COUNT, -1)
    lookup = {row.tobytes(): index for index, row in enumerate(raw)}
    found = []
    mean, std = splits.mean[0], splits.std[0]
    for dataset in (splits.train, splits.val, splits.test):
        pixels = torch.round((dataset.images * std + mean) * 16).reshape(len(dataset), -1).double().numpy()
        found.append(np.array([lookup.get(row.tobytes(), -1) for row in pixels]))
    return found


@pytest.fixture(scope="module")
def digits8():
    return load_digits_splits(image_size=8, seed=0)


def test_split_sizes_disjoint_and_cover_every_image_once(digits8):
    # the 1,797 raw digit images are pairwise distinct, so image matching recovers exact indices
    train, val, test = find_indices(digits8)
    assert (len(train), len(val), len(test)) == (1257, 270, 270)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(DIGITS_COUNT))
    np.testing.assert_array_equal(labels_of(digits8.val), load_digits().target[val])


def test_splits_are_stratified(digits8):
    overall = np.bincount(load_digits().target) / DIGITS_COUNT
    for dataset in (digits8.train, digits8.val, digits8.test):
        share = np.bincount(labels_of(dataset), minlength=10) / len(dataset)
        assert np.abs(share - overall).max() < 0.01


def test_same_seed_same_split_and_split_ignores_size_and_augmentation(digits8):
    again = load_digits_splits(image_size=8, seed=0)
    for first, second in zip(find_indices(digits8), find_indices(again), strict=True):
        np.testing.assert_array_equal(first, second)
    for other in (load_digits_splits(image_size=32, seed=0, augment=True),):
        for first, second in zip((digits8.train, digits8.val, digits8.test),
                                 (other.train, other.val, other.test), strict=True):
            torch.testing.assert_close(second.labels, first.labels, rtol=0, atol=0)
    different = load_digits_splits(image_size=8, seed=1)
    assert not np.array_equal(find_indices(different)[1], find_indices(digits8)[1])


def test_normalised_with_train_statistics(digits8):
    images = digits8.train.images
    assert abs(images.mean().item()) < 1e-5
    assert abs(images.std().item() - 1) < 1e-4
    raw_train = load_digits().images[find_indices(digits8)[0]] / 16
    assert digits8.mean[0] == pytest.approx(raw_train.mean(), abs=1e-6)
    assert digits8.std[0] == pytest.approx(raw_train.std(ddof=1), abs=1e-6)


@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_sample_shapes_and_metadata(image_size):
    splits = load_digits_splits(image_size=image_size)
    image, label = splits.val[0]
    assert image.shape == (1, image_size, image_size) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert (splits.num_classes, splits.in_channels, splits.image_size, splits.name) == (10, 1, image_size, "digits")


def test_resize_is_bilinear_of_the_scaled_image(digits8):
    resized = load_digits_splits(image_size=16)
    first = digits8.test.images[:1] * digits8.std[0] + digits8.mean[0]
    expected = torch.nn.functional.interpolate(first, size=(16, 16), mode="bilinear", align_corners=False)
    actual = resized.test.images[:1] * resized.std[0] + resized.mean[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_augmentation_shifts_train_only_and_is_reproducible():
    plain = load_digits_splits(image_size=16)
    augmented = load_digits_splits(image_size=16, augment=True)
    assert augmented.train.max_shift == 2  # 1/8 of 16 pixels
    shifted = [not torch.equal(augmented.train[i][0], plain.train[i][0]) for i in range(50)]
    assert sum(shifted) > 30
    for name in ("val", "test"):
        for i in range(20):
            assert torch.equal(getattr(augmented, name)[i][0], getattr(plain, name)[i][0])
    again = load_digits_splits(image_size=16, augment=True)
    assert all(torch.equal(again.train[i][0], augmented.train[i][0]) for i in range(20))
    augmented.train.set_epoch(1)
    assert any(not torch.equal(again.train[i][0], augmented.train[i][0]) for i in range(20))


def test_augmentation_is_a_translation_with_zero_padding():
    augmented = load_digits_splits(image_size=16, augment=True)
    image, _ = augmented.train[3]
    padded = torch.nn.functional.pad(augmented.train.images[3], (2, 2, 2, 2))
    windows = [padded[:, top:top + 16, left:left + 16] for top in range(5) for left in range(5)]
    assert any(torch.equal(image, window) for window in windows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"val_fraction": 0.0}, "need 0 < val_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction \\+ test_fraction < 1"),
        ({"test_fraction": -0.1}, "test_fraction must be in"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_digits_splits(**kwargs)
