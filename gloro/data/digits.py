"""scikit-learn's bundled 8×8 digits: real data that needs no download, for quick runs and tests."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch

from gloro.data.download import md5_file
from gloro.data.sources import source_record
from gloro.data.split import RawSplit

DIGITS_DIVISOR = 16.0  # pixel values are 0..16
DIGITS_TEST_SIZE = 360  # the last 360 of the 1797 images, an ordered split as the paper's loaders used


def sklearn_digits():
    """scikit-learn's `load_digits()` bunch; scikit-learn is imported here, not with gloro (it takes a second)."""
    from sklearn.datasets import load_digits as load

    return load()


def load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 8, 8) in [0, 1] and int64 labels for split 'train' (1437) or 'test' (360)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div(DIGITS_DIVISOR).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    cut = len(labels) - DIGITS_TEST_SIZE
    part = slice(None, cut) if split == "train" else slice(cut, None)
    return images[part].contiguous(), labels[part].contiguous()


def bundled_file() -> str:
    """Path of the file scikit-learn reads the digits from (its identity is the cache's fingerprint)."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the digits data set needs scikit-learn: pip install scikit-learn")
    return str(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz")


def read_split(split: str) -> RawSplit:
    """The same split as `load_digits`, as uint8 pixels 0..16 with the bundled file's provenance."""
    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]
    if not np.array_equal(images[:, 0], bunch.images):
        raise ValueError("scikit-learn's digits are no longer integers 0..16; the uint8 copy would differ")
    cut = len(bunch.target) - DIGITS_TEST_SIZE
    part = slice(None, cut) if split == "train" else slice(cut, None)
    path = bundled_file()
    record = source_record("digits", path, {"digits.csv.gz": md5_file(path)})
    record["package"] = f"scikit-learn {importlib.metadata.version('scikit-learn')}"
    return RawSplit(
        images=np.ascontiguousarray(images[part]),
        labels=bunch.target[part].astype(np.int64),
        class_names=[str(digit) for digit in range(10)],
        sources=[record],
        fingerprint=[Path(path)],
    )
