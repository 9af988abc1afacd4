"""Tiny-ImageNet from the official `tiny-imagenet-200/` tree or its zip (read in place, never unpacked).

Classes are the WordNet ids of `wnids.txt` in sorted order (the order of a sorted directory listing, as
Keras' and torchvision's folder loaders use). Training images: `train/<wnid>/images/*.JPEG`. The official
test images carry no labels, so the "test" split is the labelled validation set: `val/images/*.JPEG` with
labels from `val/val_annotations.txt` (10,000 images). Greyscale JPEGs are converted to RGB.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from gloro.data.download import md5_bytes, md5_file
from gloro.data.errors import CorruptDataError
from gloro.data.sources import source_record
from gloro.data.split import RawSplit

ROOT = "tiny-imagenet-200"
ARCHIVE = "tiny-imagenet-200.zip"


def find(folder: Path, split: str) -> Path | None:
    """The official tree (the folder holding wnids.txt) or the official zip in `folder`, else None."""
    for candidate in (folder / ROOT, folder):
        if (candidate / "wnids.txt").is_file():
            return candidate
    archive = folder / ARCHIVE
    return archive if archive.is_file() else None


class _Tree:
    """Files of the official tree, read from a folder or from inside the zip, named for error messages."""

    def __init__(self, location: Path):
        self.location = location
        self.zip = None
        self.prefix = ""
        if location.is_file():
            try:
                self.zip = zipfile.ZipFile(location)
            except (zipfile.BadZipFile, OSError) as error:
                raise CorruptDataError(f"{location}: truncated or corrupt zip ({error}); expected {ARCHIVE}") from error
            self.names = set(self.zip.namelist())
            roots = sorted((n for n in self.names if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len)
            if not roots:
                raise CorruptDataError(f"{location}: no wnids.txt inside; expected the official {ARCHIVE}")
            self.prefix = roots[0].removesuffix("wnids.txt")

    def label(self, relative: str) -> str:
        return f"{self.location}!{self.prefix}{relative}" if self.zip else str(self.location / relative)

    def read(self, relative: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.prefix + relative)
            return (self.location / relative).read_bytes()
        except KeyError as error:
            raise CorruptDataError(f"{self.label(relative)}: missing from the official tree") from error
        except FileNotFoundError as error:
            raise CorruptDataError(f"{self.label(relative)}: missing from the official tree") from error
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CorruptDataError(f"{self.label(relative)}: unreadable ({error})") from error

    def listdir(self, relative: str) -> list[str]:
        """Names of the files directly in `relative` (a folder of the tree)."""
        if self.zip is not None:
            start = f"{self.prefix}{relative}/"
            found = [n[len(start) :] for n in self.names if n.startswith(start) and not n.endswith("/")]
            found = [n for n in found if "/" not in n]
        else:
            folder = self.location / relative
            found = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        if not found:
            raise CorruptDataError(f"{self.label(relative)}: missing or empty; expected the official tree's images")
        return found

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def read_split(
    dataset: str, location: Path, split: str, shape: tuple[int, int, int], num_classes: int | None, progress: bool
) -> RawSplit:
    """Images (N, 3, 64, 64) and labels of `split` ('train', or 'test' = the official validation set)."""
    tree = _Tree(location)
    try:
        wnids = _wnids(tree)
        if num_classes is not None and len(wnids) > num_classes:
            raise CorruptDataError(f"{tree.label('wnids.txt')}: {len(wnids)} classes, expected {num_classes}")
        index = {wnid: i for i, wnid in enumerate(wnids)}
        files = _train_files(tree, wnids) if split == "train" else _val_files(tree, index)
        images = np.empty((len(files), *shape), dtype=np.uint8)
        labels = np.empty(len(files), dtype=np.int64)
        digest = hashlib.md5(usedforsecurity=False)
        for i, (relative, label) in enumerate(tqdm(files, desc=f"{dataset} {split}", unit="img", disable=not progress)):
            data = tree.read(relative)
            digest.update(f"{relative}\0{md5_bytes(data)}\n".encode())
            images[i] = _decode(tree.label(relative), data, shape)
            labels[i] = label
    finally:
        tree.close()
    if location.is_file():
        record = source_record(dataset, str(location), {ARCHIVE: md5_file(location)})
    else:
        record = source_record(dataset, str(location), {})
    record["files"] = len(files)
    record["content_md5"] = digest.hexdigest()
    return RawSplit(images, labels, wnids, [record], [location])


def _wnids(tree: _Tree) -> list[str]:
    lines = tree.read("wnids.txt").decode("utf-8", errors="replace").split()
    if not lines or len(set(lines)) != len(lines):
        raise CorruptDataError(f"{tree.label('wnids.txt')}: expected distinct WordNet ids, one per line")
    return sorted(lines)


def _natural(name: str) -> list:
    """Sort key that puts val_2 before val_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_jpeg(name: str) -> bool:
    return name.lower().endswith((".jpeg", ".jpg"))


def _train_files(tree: _Tree, wnids: list[str]) -> list[tuple[str, int]]:
    files = []
    for label, wnid in enumerate(wnids):
        names = sorted((n for n in tree.listdir(f"train/{wnid}/images") if _is_jpeg(n)), key=_natural)
        files.extend((f"train/{wnid}/images/{name}", label) for name in names)
    return files


def _val_files(tree: _Tree, index: dict[str, int]) -> list[tuple[str, int]]:
    annotations = "val/val_annotations.txt"
    files = {}
    text = tree.read(annotations).decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or fields[1] not in index:
            raise CorruptDataError(
                f"{tree.label(annotations)}, line {number}: {line.strip()!r:.80}; expected "
                "'<file>\\t<wnid listed in wnids.txt>\\t<box>'"
            )
        if fields[0] in files:
            raise CorruptDataError(f"{tree.label(annotations)}, line {number}: {fields[0]} is annotated twice")
        files[fields[0]] = index[fields[1]]
    if not files:
        raise CorruptDataError(f"{tree.label(annotations)}: no annotations")
    return [(f"val/images/{name}", files[name]) for name in sorted(files, key=_natural)]


def _decode(label: str, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """One JPEG as (3, H, W) uint8 RGB (greyscale and CMYK converted)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptDataError(f"{label}: not a readable JPEG ({error})") from error
    if rgb.size != (shape[2], shape[1]):
        raise CorruptDataError(f"{label}: {rgb.size[0]}×{rgb.size[1]} pixels, expected {shape[2]}×{shape[1]}")
    return np.asarray(rgb).transpose(2, 0, 1)
