"""Datasets as seeded train/val/test splits, and their loaders.

The embedded default is scikit-learn's digits; CIFAR-10 (python batches), image folders and
CIFAR-like JPEG trees (``cifar10-jpeg``, decoded once into a uint8 cache) are read from local
files. Validation is for every selection decision, test only for reports.
"""

from metaprune.data.augment import UInt8ImageDataset, pad_crop_flip
from metaprune.data.cifar import RestrictedUnpickler, load_cifar10
from metaprune.data.digits import load_digits_splits
from metaprune.data.image_folder import load_cifar10_folder, load_image_folder
from metaprune.data.loaders import TensorBatchLoader, calibration_batch, make_loaders
from metaprune.data.registry import DATASETS, load_dataset
from metaprune.data.splits import DataSplits, ImageTensorDataset

__all__ = [
    "DATASETS", "DataSplits", "ImageTensorDataset", "RestrictedUnpickler", "TensorBatchLoader", "UInt8ImageDataset",
    "calibration_batch", "load_cifar10", "load_cifar10_folder", "load_dataset", "load_digits_splits",
    "load_image_folder", "make_loaders", "pad_crop_flip",
]
