"""Image-folder datasets read from generated PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metaprune.data import load_dataset, load_image_folder
from metaprune.errors import DataError

CLASSES = ("cat", "dog", "emu")


def class_colour(class_index: int, image_index: int) -> tuple[int, int, int]:
    return (40 * class_index + image_index, 100, 200 - 30 * class_index)


def write_tree(tree, per_class: int, size: int = 12) -> None:
    """Solid-colour PNGs whose colour encodes class and image number."""
    for class_index, name in enumerate(CLASSES):
        (tree / name).mkdir(parents=True)
        for image_index in range(per_class):
            Image.new("RGB", (size, size), class_colour(class_index, image_index)).save(
                tree / name / f"{image_index}.png")


def denormalised(dataset, splits) -> torch.Tensor:
    channels = len(splits.mean)
    mean = torch.tensor(splits.mean).view(1, channels, 1, 1)
    std = torch.tensor(splits.std).view(1, channels, 1, 1)
    return dataset.images * std + mean


def test_train_test_layout(tmp_path):
    write_tree(tmp_path / "train", per_class=10)
    write_tree(tmp_path / "test", per_class=2, size=20)
    splits = load_image_folder(tmp_path, image_size=8, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 6)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, 8)
    assert sorted(splits.val.labels.tolist()) == [0, 1, 2]
    assert splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted class folders, sorted files
    # a solid colour stays that colour through resizing: check the exact RGB of the test images
    expected = torch.tensor([class_colour(c, i) for c in range(3) for i in range(2)], dtype=torch.float32) / 255
    pixels = denormalised(splits.test, splits)
    torch.testing.assert_close(pixels.mean(dim=(2, 3)), expected, rtol=0, atol=1e-5)
    assert pixels.shape == (6, 3, 8, 8)


def test_single_tree_is_split_by_seed(tmp_path):
    write_tree(tmp_path, per_class=10)
    splits = load_image_folder(tmp_path, image_size=16, grayscale=True, seed=1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 3, 6)
    assert splits.train[0][0].shape == (1, 16, 16)
    assert np.bincount(splits.test.labels.numpy()).tolist() == [2, 2, 2]
    again = load_image_folder(tmp_path, image_size=16, grayscale=True, seed=1)
    assert torch.equal(again.test.images, splits.test.images)
    other = load_image_folder(tmp_path, image_size=16, grayscale=True, seed=2)
    assert not torch.equal(other.test.images, splits.test.images)
    by_name = load_dataset("imagefolder", root=tmp_path, image_size=16, grayscale=True, seed=1)
    assert torch.equal(by_name.test.images, splits.test.images)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")


def test_only_train_without_test(tmp_path):
    write_tree(tmp_path / "train", per_class=4)
    with pytest.raises(DataError, match="only one of train/ and test/"):
        load_image_folder(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    write_tree(tmp_path, per_class=5)
    (tmp_path / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra holds no .png/.jpg/.jpeg images"):
        load_image_folder(tmp_path)


def test_unknown_test_class(tmp_path):
    write_tree(tmp_path / "train", per_class=10)
    write_tree(tmp_path / "test", per_class=1)
    (tmp_path / "test" / "yak").mkdir()
    with pytest.raises(DataError, match="yak is not among the training classes"):
        load_image_folder(tmp_path)


def test_corrupt_image_is_named(tmp_path):
    write_tree(tmp_path, per_class=5)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path)


def test_too_few_images_to_stratify(tmp_path):
    write_tree(tmp_path, per_class=1)
    with pytest.raises(DataError, match="cannot make a stratified split of 3 samples in 3 classes"):
        load_image_folder(tmp_path)
