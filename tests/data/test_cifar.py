"""CIFAR-10 python batches: reading, splitting, and refusing unsafe or malformed files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from metaprune.data import load_cifar10
from metaprune.errors import DataError

PER_CLASS_PER_BATCH = 2
BATCH_SIZE = 10 * PER_CLASS_PER_BATCH


def make_batch(seed: int, count: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = [index % 10 for index in range(count)]
    return data, labels


def write_batch(path, data, labels, protocol: int = 2) -> None:
    """A batch in the published layout: a dict with bytes keys (as Python 3 reads the Python 2 files)."""
    batch = {b"batch_label": b"generated", b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.fixture()
def cifar_root(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    for number in range(1, 6):
        write_batch(directory / f"data_batch_{number}", *make_batch(number, BATCH_SIZE), protocol=2 + number % 4)
    write_batch(directory / "test_batch", *make_batch(99, 10))
    return tmp_path


def test_reads_batches_and_splits_validation_from_train(cifar_root):
    splits = load_cifar10(cifar_root, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 10)
    assert (splits.num_classes, splits.in_channels, splits.image_size, splits.name) == (10, 3, 32, "cifar10")
    assert sorted(splits.val.labels.tolist()) == list(range(10))  # stratified: one of each class
    # test images come back in file order and, undone of normalisation, equal the stored bytes / 255
    data, labels = make_batch(99, 10)
    mean, std = torch.tensor(splits.mean).view(1, 3, 1, 1), torch.tensor(splits.std).view(1, 3, 1, 1)
    expected = torch.from_numpy(data).float().view(10, 3, 32, 32) / 255
    torch.testing.assert_close(splits.test.images * std + mean, expected, rtol=0, atol=1e-5)
    assert splits.test.labels.tolist() == labels


def test_train_and_val_partition_the_training_batches(cifar_root):
    splits = load_cifar10(cifar_root, seed=3)
    all_train = np.concatenate([make_batch(number, BATCH_SIZE)[0] for number in range(1, 6)])
    mean, std = torch.tensor(splits.mean).view(1, 3, 1, 1), torch.tensor(splits.std).view(1, 3, 1, 1)
    recovered = [torch.round((d.images * std + mean) * 255).to(torch.uint8).view(len(d), -1).numpy()
                 for d in (splits.train, splits.val)]
    rows = sorted(row.tobytes() for part in recovered for row in part)
    assert rows == sorted(row.tobytes() for row in all_train)
    again = load_cifar10(cifar_root, seed=3)
    assert torch.equal(again.val.images, splits.val.images)


def test_batches_directly_in_root_and_resize(cifar_root):
    splits = load_cifar10(cifar_root / "cifar-10-batches-py", image_size=16, augment=True)
    assert splits.train[0][0].shape == (3, 16, 16)
    assert splits.train.max_shift == 2 and splits.val.max_shift == 0


def test_malicious_pickle_is_refused_without_running(cifar_root, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to unpickle global (posix|nt|os)\.system"):
        load_cifar10(cifar_root)
    assert not marker.exists()


def test_builtins_are_refused(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DataError, match="refusing to unpickle global builtins.print"):
        load_cifar10(cifar_root)


def test_missing_batch_file_is_named(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2 not found"):
        load_cifar10(cifar_root)


def test_missing_root_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 python batches.*cifar-10-batches-py/test_batch"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "not a readable CIFAR-10 python batch"),
        (pickle.dumps([1, 2, 3]), "expected a dict with keys b'data' and b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "must be uint8 of shape N x 3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "must be uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "integers in 0..9"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "must be 2 integers"),
    ],
)
def test_malformed_batch_is_reported_with_its_path(cifar_root, content, message):
    (cifar_root / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match=f"test_batch.*{message}"):
        load_cifar10(cifar_root)
