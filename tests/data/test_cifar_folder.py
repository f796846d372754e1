"""The ``cifar10-jpeg`` fast path: uint8 cache, bad input, batch augmentation and loaders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaprune.data import (
    TensorBatchLoader,
    UInt8ImageDataset,
    calibration_batch,
    load_cifar10_folder,
    load_dataset,
    make_loaders,
    pad_crop_flip,
)
from metaprune.data import image_folder as image_folder_module
from metaprune.data.cache import cache_file
from metaprune.errors import DataError

CLASSES = ("cat", "dog", "emu")
SIDE = 8
OPTIONS = {"image_size": SIDE, "mode": "RGB", "resize": False}
SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg"


def write_image(path: Path, seed: int, side: int = SIDE) -> None:
    """A seeded noise image, saved losslessly as PNG or as JPEG by its suffix."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def write_cifar_tree(root: Path, train_per_class: int = 10, test_per_class: int = 2, offset: int = 0) -> Path:
    """``root/{train,test}/<class>/N.jpg`` with seeded noise images (``offset`` changes every image)."""
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for class_index, name in enumerate(CLASSES):
            for image_index in range(per_class):
                seed = offset + 1000 * (split == "test") + 100 * class_index + image_index
                write_image(root / split / name / f"{image_index:04d}.jpg", seed)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own."""
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def decoded_test_images(root: Path) -> torch.Tensor:
    """The test tree decoded afresh (no cache), as uint8."""
    return load_cifar10_folder(root, image_size=SIDE, cache=False).test.images


def test_splits_and_normalised_items(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    splits = load_cifar10_folder(root, image_size=SIDE, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 6)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, SIDE)
    assert splits.train.images.dtype == torch.uint8 and splits.train.augment and not splits.val.augment
    assert sorted(splits.val.labels.tolist()) == [0, 1, 2]
    assert splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # the training statistics normalise the training pixels to mean 0, std 1 per channel
    pixels = splits.train.images.double() / 255
    assert np.allclose(splits.mean, pixels.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(splits.std, pixels.std(dim=(0, 2, 3), unbiased=False).tolist())
    image, label = splits.test[3]
    expected = (splits.test.images[3].double() / 255 - torch.tensor(splits.mean).view(3, 1, 1)) \
        / torch.tensor(splits.std).view(3, 1, 1)
    torch.testing.assert_close(image.double(), expected, rtol=0, atol=1e-5)
    assert label == 1
    by_name = load_dataset("cifar10-jpeg", root=root, image_size=SIDE, seed=0)
    assert torch.equal(by_name.train.images, splits.train.images)


def test_cache_hit_does_not_decode(tmp_path, cache_dir, monkeypatch):
    root = write_cifar_tree(tmp_path / "tree")
    first = load_cifar10_folder(root, image_size=SIDE)
    assert cache_file(root, OPTIONS).is_file() and cache_file(root, OPTIONS).parent == cache_dir

    def no_decoding(*args, **kwargs):
        raise AssertionError("a current cache must not be decoded again")

    monkeypatch.setattr(image_folder_module, "_decode_exact", no_decoding)
    second = load_cifar10_folder(root, image_size=SIDE)
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.test.images, first.test.images)


def test_changed_image_rebuilds_the_cache(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    before = load_cifar10_folder(root, image_size=SIDE).test.images
    changed = root / "test" / "dog" / "0001.jpg"
    write_image(changed, seed=999)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a different mtime even on coarse clocks
    after = load_cifar10_folder(root, image_size=SIDE).test.images
    assert not torch.equal(after[3], before[3])
    assert torch.equal(after, decoded_test_images(root))


def test_added_image_rebuilds_the_cache(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    assert len(load_cifar10_folder(root, image_size=SIDE).test) == 6
    write_image(root / "test" / "emu" / "0002.jpg", seed=77)
    assert len(load_cifar10_folder(root, image_size=SIDE).test) == 7


def test_cache_file_of_other_data_is_rebuilt(tmp_path, cache_dir):
    other = write_cifar_tree(tmp_path / "other", offset=5)
    root = write_cifar_tree(tmp_path / "tree")
    load_cifar10_folder(other, image_size=SIDE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache_file(other, OPTIONS), cache_file(root, OPTIONS))  # a foreign file under this tree's name
    assert torch.equal(load_cifar10_folder(root, image_size=SIDE).test.images, decoded_test_images(root))


def test_corrupt_cache_file_is_rebuilt(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    load_cifar10_folder(root, image_size=SIDE)
    cache_file(root, OPTIONS).write_bytes(b"not a safetensors file")
    assert torch.equal(load_cifar10_folder(root, image_size=SIDE).test.images, decoded_test_images(root))


def test_without_cache_nothing_is_written(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    load_cifar10_folder(root, image_size=SIDE, cache=False)
    assert not cache_dir.exists()


def test_image_of_another_size_is_an_error(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    write_image(root / "train" / "dog" / "0003.jpg", seed=1, side=12)
    with pytest.raises(DataError, match=r"0003.jpg is 12x12 pixels, but this data set is read at 8x8"):
        load_cifar10_folder(root, image_size=SIDE)
    with pytest.raises(DataError, match="pass --image-size"):
        load_cifar10_folder(root, image_size=SIDE, cache=False)


def test_asking_another_size_is_an_error(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    load_cifar10_folder(root, image_size=SIDE)
    with pytest.raises(DataError, match="is 8x8 pixels, but this data set is read at 16x16"):
        load_cifar10_folder(root, image_size=16)  # never a cache of 8x8 images served as 16x16


@pytest.mark.parametrize("present, missing", [("train", "test/"), ("test", "train/"), (None, "train/ and no test/")])
def test_missing_split_is_an_error(tmp_path, cache_dir, present, missing):
    root = tmp_path / "tree"
    if present:
        write_image(root / present / "cat" / "0000.jpg", seed=0)
    else:
        write_image(root / "cat" / "0000.jpg", seed=0)
    with pytest.raises(DataError, match=f"has no {missing} folder"):
        load_cifar10_folder(root, image_size=SIDE)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10_folder(tmp_path / "nowhere")


def test_pad_crop_flip_by_hand():
    images = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3)
    centred = pad_crop_flip(images, 1, offsets=torch.tensor([[1, 1], [1, 1]]), flips=torch.tensor([False, False]))
    assert torch.equal(centred, images)
    shifted = pad_crop_flip(images, 1, offsets=torch.tensor([[0, 2], [1, 1]]), flips=torch.tensor([False, True]))
    # image 0 moved down one row and left one column (zeros enter at the top and right)
    assert shifted[0, 0].tolist() == [[0, 0, 0], [1, 2, 0], [4, 5, 0]]
    assert torch.equal(shifted[1], images[1].flip(-1))  # image 1 only flipped


def test_pad_crop_flip_shape_and_seed():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    first = pad_crop_flip(images, 4, torch.Generator().manual_seed(3))
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(first, pad_crop_flip(images, 4, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, pad_crop_flip(images, 4, torch.Generator().manual_seed(4)))


def test_loader_batches_are_seeded_augmented_and_channels_last(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    splits = load_cifar10_folder(root, image_size=SIDE, seed=0)
    train, val, test = make_loaders(splits, batch_size=8, seed=0)
    assert isinstance(train, TensorBatchLoader) and (len(train), len(val), len(test)) == (4, 1, 1)
    batches = list(train)
    assert [len(labels) for _, labels in batches] == [8, 8, 8, 3]
    inputs, _ = batches[0]
    assert inputs.shape == (8, 3, SIDE, SIDE) and inputs.is_contiguous(memory_format=torch.channels_last)
    again = list(make_loaders(splits, batch_size=8, seed=0)[0])
    other = list(make_loaders(splits, batch_size=8, seed=1)[0])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0][0], other[0][0])
    assert not torch.equal(batches[0][0], list(train)[0][0])  # the next epoch draws anew
    # every training image appears once per epoch; augmentation leaves the labels alone
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == sorted(splits.train.labels.tolist())
    # evaluation batches are not augmented: they are the normalised pixels in order
    val_inputs, val_labels = next(iter(val))
    assert torch.equal(val_labels, splits.val.labels)
    torch.testing.assert_close(val_inputs, torch.stack([splits.val[index][0] for index in range(3)]))


def test_item_augmentation_is_seeded_by_epoch(tmp_path, cache_dir):
    root = write_cifar_tree(tmp_path / "tree")
    train = load_cifar10_folder(root, image_size=SIDE, seed=0).train
    draws = [train[5][0] for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(train[-1][0], train[len(train) - 1][0])
    epochs = []
    for epoch in range(4):
        train.set_epoch(epoch)
        epochs.append(train[5][0])
    assert any(not torch.equal(epochs[0], image) for image in epochs[1:])
    plain = train.without_augmentation()
    assert not plain.augment and plain.images is train.images


def test_calibration_and_training_use_the_fast_path(tmp_path, cache_dir):
    from metaprune.models import create_model
    from metaprune.train import evaluate, fit

    root = write_cifar_tree(tmp_path / "tree")
    splits = load_cifar10_folder(root, image_size=SIDE, seed=0)
    inputs, labels = calibration_batch(splits, n=6, seed=0)
    assert inputs.shape == (6, 3, SIDE, SIDE)
    assert torch.equal(calibration_batch(splits, n=6, seed=0)[0], inputs)  # not augmented: the same every call
    train, val, _ = make_loaders(splits, batch_size=8, seed=0)
    model = create_model("resnet20", num_classes=3, in_channels=3, image_size=SIDE, width=0.25)
    result = fit(model, train, epochs=1, lr=0.05, val_loader=val, progress=False)
    assert len(result.train_loss) == 1 and np.isfinite(result.train_loss[0])
    assert 0.0 <= evaluate(model, val) <= 1.0


def test_uint8_dataset_checks_its_inputs():
    with pytest.raises(DataError, match="expected uint8 images"):
        UInt8ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(DataError, match="one value per channel"):
        UInt8ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2), (0.5,), (0.2,))


@pytest.mark.slow  # decodes 60,000 JPEG files (about 10-30 s)
@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="the shared CIFAR-10 JPEG copy is not on this machine")
def test_shared_cifar10_jpeg(cache_dir):
    splits = load_dataset("cifar10-jpeg", root=SHARED_CIFAR, image_size=32, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45_000, 5_000, 10_000)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    assert np.bincount(splits.test.labels.numpy()).tolist() == [1000] * 10
    assert cache_file(SHARED_CIFAR, {"image_size": 32, "mode": "RGB", "resize": False}).is_file()
