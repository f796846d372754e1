"""Image-folder datasets: one sub-folder of PNG/JPEG images per class.

Two layouts are accepted::

    root/train/<class>/*.png|jpg   and   root/test/<class>/*.png|jpg
    root/<class>/*.png|jpg                  (split into train/val/test with the seed)

Class ids follow the sorted class-folder names of the training tree.

:func:`load_image_folder` resizes every image to ``image_size`` and holds float tensors.
:func:`load_cifar10_folder` (data set ``cifar10-jpeg``) is the fast path for CIFAR-like
trees: it needs the ``train/`` + ``test/`` layout and images of exactly ``image_size``,
decodes them once into a uint8 cache (:mod:`metaprune.data.cache`) and serves augmented,
normalised batches (:mod:`metaprune.data.augment`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metaprune.data.augment import UInt8ImageDataset, channel_statistics
from metaprune.data.cache import cached_tensors
from metaprune.data.splits import DataSplits, build_splits, check_image_size, split_indices
from metaprune.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _class_folders(tree: Path) -> list[Path]:
    folders = sorted(path for path in tree.iterdir() if path.is_dir())
    if not folders:
        raise DataError(f"{tree} holds no class folders; expected {tree}/<class>/*.png|jpg")
    return folders


def _image_files(tree: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image paths under ``tree/<class>/`` and their class ids (index into ``class_names``)."""
    paths, labels = [], []
    for folder in _class_folders(tree):
        if folder.name not in class_names:
            raise DataError(f"class folder {folder} is not among the training classes {class_names}")
        files = sorted((path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda path: path.name)
        if not files:
            raise DataError(f"class folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        paths += files
        labels += [class_names.index(folder.name)] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def _read_images(paths: list[Path], image_size: int, grayscale: bool) -> torch.Tensor:
    """``N x C x image_size x image_size`` floats in [0, 1]; each image bilinearly resized by PIL."""
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if grayscale else "RGB")
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read image {path}: {error}; expected a PNG or JPEG file") from None
    stacked = torch.from_numpy(np.stack(arrays)).float() / 255.0
    return stacked.unsqueeze(1) if grayscale else stacked.permute(0, 3, 1, 2)


def load_image_folder(root: str | Path, image_size: int = 32, grayscale: bool = False, seed: int = 0,
                      augment: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DataSplits:
    """An image-folder dataset as ``image_size`` square images (1 channel if ``grayscale``, else 3).

    With ``root/train`` (and ``root/test``) the test split is the test tree and validation is a
    stratified ``val_fraction`` of train; with a single ``root/<class>`` tree all three splits
    are carved from it (``test_fraction`` for test). Splits depend only on the seed.
    """
    check_image_size(image_size)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    train_tree, test_tree = root / "train", root / "test"
    if train_tree.is_dir() != test_tree.is_dir():
        raise DataError(f"{root} has only one of train/ and test/; provide both, or a single "
                        f"{root}/<class>/ tree")
    source_tree = train_tree if train_tree.is_dir() else root
    class_names = [folder.name for folder in _class_folders(source_tree)]
    paths, labels = _image_files(source_tree, class_names)
    images, label_tensor = _read_images(paths, image_size, grayscale), torch.from_numpy(labels)
    if test_tree.is_dir():
        train_index, val_index, _ = split_indices(labels, val_fraction, 0.0, seed)
        test_paths, test_labels = _image_files(test_tree, class_names)
        test = (_read_images(test_paths, image_size, grayscale), torch.from_numpy(test_labels))
    else:
        train_index, val_index, test_index = split_indices(labels, val_fraction, test_fraction, seed)
        test = (images[test_index], label_tensor[test_index])
    parts = [(images[train_index], label_tensor[train_index]), (images[val_index], label_tensor[val_index]), test]
    return build_splits(f"imagefolder:{root.name}", parts, num_classes=len(class_names),
                        image_size=image_size, augment=augment, seed=seed)


def _decode_exact(paths: list[Path], image_size: int) -> torch.Tensor:
    """``N x 3 x image_size x image_size`` uint8 RGB images; DataError naming the first image of another size."""
    pixels = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for position, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                if image.size != (image_size, image_size):
                    width, height = image.size
                    raise DataError(f"image {path} is {width}x{height} pixels, but this data set is read at "
                                    f"{image_size}x{image_size}; pass --image-size {width} if every image has that "
                                    "size, or use --data imagefolder, which resizes")
                pixels[position] = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read image {path}: {error}; expected a PNG or JPEG file") from None
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def load_cifar10_folder(root: str | Path, image_size: int = 32, seed: int = 0, augment: bool = True,
                        val_fraction: float = 0.1, cache: bool = True, channels_last: bool = True) -> DataSplits:
    """A CIFAR-like ``root/train/<class>/`` + ``root/test/<class>/`` tree of ``image_size`` RGB images, as uint8.

    Validation is a stratified, seeded ``val_fraction`` of train. The decoded images are cached
    (``cache=False``: decode every time, write nothing); normalisation uses the training split's
    per-channel statistics; ``augment`` (default on) pads by 4, crops randomly and flips the
    training split; ``channels_last`` (default) serves batches in channels-last memory, which
    makes CPU convolutions about 1.5x faster here even for a model left in contiguous memory
    (``benchmarks/cifar10_input.py``).

    Raises:
        DataError: ``root`` lacks ``train/`` or ``test/``, an image is unreadable or of another size.
    """
    check_image_size(image_size)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    missing = [name for name in ("train", "test") if not (root / name).is_dir()]
    if missing:
        raise DataError(f"{root} has no {' and no '.join(f'{name}/' for name in missing)} folder; this data set "
                        f"needs {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg")
    class_names = [folder.name for folder in _class_folders(root / "train")]
    train_paths, train_labels = _image_files(root / "train", class_names)
    test_paths, test_labels = _image_files(root / "test", class_names)

    def decode() -> dict[str, torch.Tensor]:
        return {"train_images": _decode_exact(train_paths, image_size), "train_labels": torch.from_numpy(train_labels),
                "test_images": _decode_exact(test_paths, image_size), "test_labels": torch.from_numpy(test_labels)}

    tensors = cached_tensors(root, train_paths + test_paths, {"image_size": image_size, "mode": "RGB", "resize": False},
                             decode, use_cache=cache)
    train_index, val_index, _ = split_indices(train_labels, val_fraction, 0.0, seed)
    train_index, val_index = torch.from_numpy(train_index), torch.from_numpy(val_index)
    images, labels = tensors["train_images"], tensors["train_labels"]
    mean, std = channel_statistics(images[train_index])

    def dataset(part_images: torch.Tensor, part_labels: torch.Tensor, augmented: bool) -> UInt8ImageDataset:
        return UInt8ImageDataset(part_images, part_labels, mean, std, augment=augmented, seed=seed,
                                 channels_last=channels_last)

    return DataSplits(
        train=dataset(images[train_index], labels[train_index], augment),
        val=dataset(images[val_index], labels[val_index], False),
        test=dataset(tensors["test_images"], tensors["test_labels"], False),
        num_classes=len(class_names), in_channels=3, image_size=image_size, name=f"cifar10-jpeg:{root.name}",
        mean=mean, std=std)
