"""CIFAR-10 and CIFAR-100 from the "python version" batches, unpacked or inside the official .tar.gz.

The batches are pickles. They are read with an unpickler that accepts only what a batch holds (numpy
arrays, lists, bytes), so a file that is not a CIFAR batch cannot run code while being loaded.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gloro.data.download import md5_bytes, md5_file
from gloro.data.errors import CorruptDataError
from gloro.data.sources import source_record
from gloro.data.split import RawSplit


@dataclass(frozen=True)
class Layout:
    """How one CIFAR release names its archive, its folder, its batches and its label keys."""

    archive: str
    folder: str
    batches: dict[str, tuple[str, ...]]
    meta: str
    label_key: str
    names_key: str


LAYOUTS = {
    "cifar10": Layout(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        batches={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": Layout(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        batches={"train": ("train",), "test": ("test",)},
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
    ),
}


def find(dataset: str, folder: Path, split: str) -> Path | None:
    """The unpacked batch folder or the official archive in `folder` that serves `split`, else None."""
    layout = LAYOUTS[dataset]
    needed = (*layout.batches[split], layout.meta)
    for candidate in (folder / layout.folder, folder):
        if all((candidate / name).is_file() for name in needed):
            return candidate
    archive = folder / layout.archive
    return archive if archive.is_file() else None


def read_split(dataset: str, location: Path, split: str, shape: tuple[int, int, int], num_classes: int) -> RawSplit:
    """Images (N, 3, 32, 32) and labels of `split` from a batch folder or the .tar.gz at `location`."""
    layout = LAYOUTS[dataset]
    needed = (*layout.batches[split], layout.meta)
    if location.is_file():
        members, sources = _read_archive(dataset, location, layout, needed)
    else:
        members = {name: (str(location / name), (location / name).read_bytes()) for name in needed}
        sources = []
    for name, (label, data) in members.items():
        sources.append(source_record(dataset, label, {name: md5_bytes(data)}))
    class_names = _class_names(*members[layout.meta], layout.names_key, num_classes)
    images, labels = [], []
    for name in layout.batches[split]:
        batch_images, batch_labels = _read_batch(*members[name], layout.label_key, shape, num_classes)
        images.append(batch_images)
        labels.append(batch_labels)
    fingerprint = [location] if location.is_file() else [location / name for name in needed]
    return RawSplit(np.concatenate(images), np.concatenate(labels), class_names, sources, fingerprint)


def _read_archive(
    dataset: str, archive: Path, layout: Layout, needed: tuple[str, ...]
) -> tuple[dict[str, tuple[str, bytes]], list[dict]]:
    """The needed members of the official .tar.gz, read in one pass, and the archive's checksum record."""
    sources = [source_record(dataset, str(archive), {layout.archive: md5_file(archive)})]
    wanted = {f"{layout.folder}/{name}": name for name in needed}
    members = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    stream = tar.extractfile(member)
                    members[wanted[member.name]] = (f"{archive}!{member.name}", stream.read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CorruptDataError(
            f"{archive}: truncated or corrupt archive ({error}); expected the official {layout.archive}"
        ) from error
    missing = [path for path, name in wanted.items() if name not in members]
    if missing:
        raise CorruptDataError(f"{archive}: lacks {', '.join(missing)}; expected the official {layout.archive}")
    return members, sources


def _read_batch(
    label: str, data: bytes, label_key: str, shape: tuple[int, int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(label, data)
    pixels, targets = batch.get("data"), batch.get(label_key)
    size = int(np.prod(shape))
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != size:
        found = f"{pixels.dtype} array of shape {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels)
        raise CorruptDataError(f"{label}: 'data' is {found}, expected a uint8 array of shape (N, {size})")
    if targets is None:
        raise CorruptDataError(f"{label}: no '{label_key}' entry, expected one label per image")
    targets = np.asarray(targets)
    if targets.shape != (len(pixels),) or not np.issubdtype(targets.dtype, np.integer):
        raise CorruptDataError(f"{label}: '{label_key}' has shape {targets.shape}, expected {len(pixels)} integers")
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise CorruptDataError(
            f"{label}: labels span {targets.min()}..{targets.max()}, expected labels 0..{num_classes - 1}"
        )
    return pixels.reshape(-1, *shape), targets.astype(np.int64)


def _class_names(label: str, data: bytes, key: str, num_classes: int) -> list[str]:
    names = _unpickle(label, data).get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise CorruptDataError(f"{label}: '{key}' should list {num_classes} class names, found {names!r:.80}")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def _unpickle(label: str, data: bytes) -> dict:
    """A batch dict with str keys; anything else (or an unpickling failure) raises CorruptDataError."""
    try:
        loaded = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a corrupt pickle can fail in many ways; all mean the same here
        raise CorruptDataError(f"{label}: not a CIFAR python batch ({type(error).__name__}: {error})") from error
    if not isinstance(loaded, dict):
        raise CorruptDataError(f"{label}: holds a {type(loaded).__name__}, expected a CIFAR batch dict")
    return {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in loaded.items()}


def _numpy_global(module: str, name: str):
    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    return None


ALLOWED_GLOBALS = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): _numpy_global(module, name)
        for module, name in (
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        )
    },
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR batch holds only arrays, lists and bytes")
        return found
