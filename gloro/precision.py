"""Certification in the arithmetic its error bounds assume, whatever the caller has switched on.

Autocast (bfloat16 or float16), TF32 matrix products and convolutions, oneDNN's bf16 "fp32" mode and
cuDNN's FFT and Winograd algorithms all compute something other than the IEEE inner products that
`gloro.forward_error` bounds. `exact_arithmetic()` turns every one of them off for the enclosed block and
restores the caller's settings afterwards; training is left as fast as the caller made it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISION_SETTINGS = ("", "cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _backend(path: str):
    obj = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def exact_arithmetic() -> Iterator[None]:
    """IEEE float32/float64 arithmetic in the block: no autocast, no TF32 or bf16 products, no cuDNN.

    Uses PyTorch's per-backend `fp32_precision` settings (which also override `allow_tf32` and
    `set_float32_matmul_precision`), never the legacy flags, which PyTorch refuses to mix with them.
    """
    saved = {}
    for path in PRECISION_SETTINGS:
        with contextlib.suppress(AttributeError):
            saved[path] = _backend(path).fp32_precision
    cudnn = torch.backends.cudnn.enabled
    try:
        for path in saved:
            _backend(path).fp32_precision = "ieee"
        torch.backends.cudnn.enabled = False  # its FFT and Winograd convolutions are not inner products
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        for path, value in saved.items():
            _backend(path).fp32_precision = value
        torch.backends.cudnn.enabled = cudnn


def arithmetic_is_exact() -> bool:
    """Whether the current settings compute float32 as IEEE inner products (what `exact_arithmetic` sets)."""
    if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
        return False
    if torch.cuda.is_available() and torch.backends.cudnn.enabled:
        return False
    return all(
        _backend(path).fp32_precision == "ieee"
        for path in PRECISION_SETTINGS
        if hasattr(_backend(path), "fp32_precision")
    )
