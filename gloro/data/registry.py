"""The data sets by name: what each is (shape, classes, official split sizes, pixel divisor), where its
official files come from, and how to find and read them (`gloro.data.prepare` loads and caches them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gloro.data import cifar, digits, idx, tiny_imagenet
from gloro.data.sources import RELEASES, Release
from gloro.data.split import RawSplit

SPLITS = ("train", "test")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is (shape, classes, official split sizes, pixel divisor) and how to find and read it.

    `find(folder, split)` returns the source in `folder` (a folder or an archive) or None;
    `read(location, split, progress)` reads it. `bundled` names a source shipped with a package (digits).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    sizes: dict[str, int]
    divisor: float
    description: str
    find: Callable[[Path, str], Path | None]
    read: Callable[[Path, str, bool], RawSplit]
    class_names: tuple[str, ...] | None = None
    release: Release | None = None
    bundled: Callable[[], str] | None = None

    def official_files(self) -> list[str]:
        return [file.name for file in self.release.files] if self.release else []


def _idx_spec(name: str, description: str, class_names: tuple[str, ...]) -> DatasetSpec:
    shape = (1, 28, 28)
    return DatasetSpec(
        name=name,
        shape=shape,
        num_classes=10,
        sizes={"train": 60000, "test": 10000},
        divisor=255.0,
        description=description,
        find=idx.find,
        read=lambda location, split, progress: idx.read_split(name, location, split, shape, 10),
        class_names=class_names,
        release=RELEASES[name],
    )


def _cifar_spec(name: str, num_classes: int, description: str) -> DatasetSpec:
    shape = (3, 32, 32)
    return DatasetSpec(
        name=name,
        shape=shape,
        num_classes=num_classes,
        sizes={"train": 50000, "test": 10000},
        divisor=255.0,
        description=description,
        find=partial(cifar.find, name),
        read=lambda location, split, progress: cifar.read_split(name, location, split, shape, num_classes),
        release=RELEASES[name],
    )


DATASETS: dict[str, DatasetSpec] = {}  # name → spec, filled by `register_dataset`


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make `spec` loadable by its name (`load_dataset`, a config's `dataset:`); a plugin module registers its
    own this way. A name another spec already has raises."""
    known = DATASETS.get(spec.name)
    if known is not None and known is not spec:
        raise ValueError(f"a data set named {spec.name!r} is already registered")
    if not spec.name or any(c in spec.name for c in "/ "):
        raise ValueError(f"a data set's name names its cache files: give one without '/' or spaces, got {spec.name!r}")
    DATASETS[spec.name] = spec
    return spec


for _spec in (
    _idx_spec("mnist", "MNIST handwritten digits, 28×28 grey", tuple(str(digit) for digit in range(10))),
    _idx_spec("fashion-mnist", "Zalando's Fashion-MNIST, 28×28 grey", FASHION_CLASSES),
    _cifar_spec("cifar10", 10, "CIFAR-10, 32×32 colour"),
    _cifar_spec("cifar100", 100, "CIFAR-100 (fine labels), 32×32 colour"),
    DatasetSpec(
        name="tiny-imagenet",
        shape=(3, 64, 64),
        num_classes=200,
        sizes={"train": 100000, "test": 10000},
        divisor=255.0,
        description="Tiny-ImageNet-200, 64×64 colour; 'test' is the labelled validation set",
        find=tiny_imagenet.find,
        read=lambda location, split, progress: tiny_imagenet.read_split(
            "tiny-imagenet", location, split, (3, 64, 64), 200, progress
        ),
        release=RELEASES["tiny-imagenet"],
    ),
    DatasetSpec(
        name="digits",
        shape=(1, 8, 8),
        num_classes=10,
        sizes={"train": 1437, "test": 360},
        divisor=digits.DIGITS_DIVISOR,
        description="scikit-learn's bundled 8×8 digits (no download), pixels 0..16",
        find=lambda folder, split: None,
        read=lambda location, split, progress: digits.read_split(split),
        bundled=digits.bundled_file,
    ),
):
    register_dataset(_spec)


def datasets() -> tuple[str, ...]:
    """Names accepted by `load_dataset`."""
    return tuple(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of data set `name`; an unknown name raises and lists the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]
