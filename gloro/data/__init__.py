"""Data sets, scaled to [0, 1] without mean/std normalisation (ε is defined on that scale).

`load_dataset(name, split)` reads MNIST, Fashion-MNIST, CIFAR-10/100, Tiny-ImageNet or scikit-learn's digits
from a local folder of official files, Debian's Fashion-MNIST, or a checked download, through one cached file
per data set and split. `augmentation(name)` gives the recipes' training-time augmentations.
"""

from gloro.data.augment import (
    Augmentation,
    augment_cifar10,
    augment_tiny_imagenet,
    augmentation,
    augmentations,
    no_augmentation,
)
from gloro.data.digits import DIGITS_DIVISOR, load_digits
from gloro.data.download import download_file
from gloro.data.errors import (
    ChecksumError,
    CorruptDataError,
    DataError,
    DatasetUnavailableError,
    UnverifiedDataWarning,
)
from gloro.data.prepare import cache_file, dataset_available, default_cache_dir, load_dataset, prepare_dataset
from gloro.data.registry import DatasetSpec, dataset_spec, datasets, register_dataset
from gloro.data.split import Split, Subset, to_unit_interval

__all__ = [
    "DIGITS_DIVISOR",
    "Augmentation",
    "ChecksumError",
    "CorruptDataError",
    "DataError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "Split",
    "Subset",
    "UnverifiedDataWarning",
    "augment_cifar10",
    "augment_tiny_imagenet",
    "augmentation",
    "augmentations",
    "cache_file",
    "dataset_available",
    "dataset_spec",
    "datasets",
    "default_cache_dir",
    "download_file",
    "load_dataset",
    "load_digits",
    "no_augmentation",
    "prepare_dataset",
    "register_dataset",
    "to_unit_interval",
]
