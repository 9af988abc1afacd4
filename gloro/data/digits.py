"""scikit-learn's bundled 8×8 digits: real data that needs no download, for quick runs and tests."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sklearn_digits

DIGITS_DIVISOR = 16.0  # pixel values are 0..16
DIGITS_TEST_SIZE = 360  # the last 360 of the 1797 images, an ordered split as the paper's loaders used


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
