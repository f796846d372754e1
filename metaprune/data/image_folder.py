"""Image-folder datasets: one sub-folder of PNG/JPEG images per class.

Two layouts are accepted::

    root/train/<class>/*.png|jpg   and   root/test/<class>/*.png|jpg
    root/<class>/*.png|jpg                  (split into train/val/test with the seed)

Class ids follow the sorted class-folder names of the training tree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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
        files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
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
