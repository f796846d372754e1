"""DataLoaders, calibration batches and datasets by name."""

from __future__ import annotations

import pytest
import torch

from metaprune.data import DATASETS, calibration_batch, load_dataset, load_digits_splits, make_loaders
from metaprune.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return load_digits_splits(image_size=8, augment=True)


def first_labels(loader) -> list[int]:
    return next(iter(loader))[1].tolist()


def test_loader_sizes_and_batches(digits):
    train, val, test = make_loaders(digits, batch_size=100)
    assert [len(loader.dataset) for loader in (train, val, test)] == [1257, 270, 270]
    assert len(train) == 13 and len(val) == 3
    images, labels = next(iter(val))
    assert images.shape == (100, 1, 8, 8) and labels.dtype == torch.long
    assert labels.tolist() == digits.val.labels[:100].tolist()  # val keeps its order


def test_train_shuffle_is_seeded(digits):
    first = first_labels(make_loaders(digits, seed=5)[0])
    assert first_labels(make_loaders(digits, seed=5)[0]) == first
    assert first_labels(make_loaders(digits, seed=6)[0]) != first
    assert first != digits.train.labels[:64].tolist()


@pytest.mark.parametrize(("kwargs", "message"), [({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers")])
def test_loader_arguments_are_checked(digits, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_loaders(digits, **kwargs)


def test_calibration_batch_is_seeded_unaugmented_train_data(digits):
    x, y = calibration_batch(digits, n=32, seed=1)
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    again_x, again_y = calibration_batch(digits, n=32, seed=1)
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    chosen = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(1))[:32]
    assert torch.equal(x, digits.train.images[chosen]) and torch.equal(y, digits.train.labels[chosen])
    assert not torch.equal(calibration_batch(digits, n=32, seed=2)[0], x)


def test_calibration_batch_larger_than_train(digits):
    with pytest.raises(ConfigError, match="has only 1257"):
        calibration_batch(digits, n=5000)


def test_load_dataset_by_name():
    assert tuple(DATASETS) == ("digits", "cifar10", "imagefolder", "cifar10-jpeg")
    splits = load_dataset("digits", image_size=8, seed=0)
    assert torch.equal(splits.val.images, load_digits_splits(image_size=8).val.images)


@pytest.mark.parametrize(
    ("name", "root", "kwargs", "error", "message"),
    [
        ("mnist", None, {}, ConfigError, "unknown dataset 'mnist'; known datasets: digits, cifar10, imagefolder"),
        ("digits", "/tmp", {}, ConfigError, "takes no root"),
        ("digits", None, {"colour": True}, ConfigError, "bad options for dataset 'digits'"),
        ("cifar10", None, {}, DataError, "pass root="),
        ("imagefolder", "/no/such/folder", {}, DataError, "/no/such/folder does not exist"),
    ],
)
def test_load_dataset_errors(name, root, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset(name, root=root, **kwargs)
