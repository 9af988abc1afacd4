"""MNIST and Fashion-MNIST from their official IDX files, gzipped or not (LeCun's format: big-endian header)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from gloro.data.download import md5_bytes
from gloro.data.errors import CorruptDataError
from gloro.data.sources import source_record
from gloro.data.split import RawSplit

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find(folder: Path, split: str) -> Path | None:
    """`folder` when it holds both IDX files of `split` (each gzipped or not), else None."""
    found = all(_path(folder, name) is not None for name in FILES[split])
    return folder if found else None


def _path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, ndim: int) -> tuple[np.ndarray, str, str]:
    """An IDX array of unsigned bytes with `ndim` dimensions; returns (array, file MD5, payload MD5).

    Gzip is detected from the file's first bytes, not its name. A truncated stream, a wrong magic number,
    a wrong number of dimensions or a payload of the wrong length raises CorruptDataError naming the file.
    """
    data = path.read_bytes()
    file_md5 = md5_bytes(data)
    payload_md5 = file_md5
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as error:
            raise CorruptDataError(f"{path}: truncated or corrupt gzip stream ({error})") from error
        payload_md5 = md5_bytes(data)
    expected = f"an IDX file of unsigned bytes with {ndim} dimension(s) (magic 0x000008{ndim:02x})"
    if len(data) >= 4:
        zero, kind, dims = struct.unpack(">HBB", data[:4])
        if zero != 0 or kind != UNSIGNED_BYTE or dims != ndim:
            raise CorruptDataError(f"{path}: magic number 0x{data[:4].hex()}, expected {expected}")
    if len(data) < 4 + 4 * ndim:
        raise CorruptDataError(f"{path}: {len(data)} bytes, too short for {expected}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = memoryview(data)[4 + 4 * ndim :]
    count = int(np.prod(shape))
    if len(body) != count:
        state = "truncated" if len(body) < count else "has trailing bytes"
        raise CorruptDataError(
            f"{path}: {state}: header promises {count} data bytes for shape {shape}, found {len(body)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape), file_md5, payload_md5


def read_split(dataset: str, folder: Path, split: str, shape: tuple[int, int, int], num_classes: int) -> RawSplit:
    """The images (N, 1, H, W) and labels of `split` from the IDX files in `folder`."""
    image_name, label_name = FILES[split]
    image_path, label_path = _path(folder, image_name), _path(folder, label_name)
    if image_path is None or label_path is None:
        raise CorruptDataError(f"{folder}: needs {image_name} and {label_name} (gzipped or not) for the {split} split")
    images, image_md5, image_payload = read_idx(image_path, 3)
    labels, label_md5, label_payload = read_idx(label_path, 1)
    if images.shape[1:] != shape[1:]:
        raise CorruptDataError(
            f"{image_path}: images of {images.shape[1]}×{images.shape[2]}, expected {shape[1]}×{shape[2]}"
        )
    if len(labels) != len(images):
        raise CorruptDataError(f"{label_path}: {len(labels)} labels for the {len(images)} images in {image_path.name}")
    if len(labels) and labels.max() >= num_classes:
        raise CorruptDataError(f"{label_path}: label {labels.max()} found, expected labels 0..{num_classes - 1}")
    sources = [
        source_record(dataset, str(path), _measured(name, file_md5, payload_md5))
        for name, path, file_md5, payload_md5 in (
            (image_name, image_path, image_md5, image_payload),
            (label_name, label_path, label_md5, label_payload),
        )
    ]
    return RawSplit(
        images=images[:, None].copy(),
        labels=labels.astype(np.int64),
        class_names=[],
        sources=sources,
        fingerprint=[image_path, label_path],
    )


def _measured(name: str, file_md5: str, payload_md5: str) -> dict[str, str]:
    """The MD5s to compare with the published ones: the file as it is, and its payload when it was gzipped."""
    if file_md5 == payload_md5:
        return {name: file_md5}
    return {f"{name}.gz": file_md5, name: payload_md5}
