"""Certification in the arithmetic its error bounds assume, whatever the caller has switched on.

Autocast (bfloat16 or float16), TF32 matrix products and convolutions, oneDNN's bf16 "fp32" mode and
cuDNN's FFT and Winograd algorithms all compute something other than the IEEE inner products that
`gloro.forward_error` bounds. `exact_arithmetic()` turns every one of them off for the enclosed block and
restores the caller's settings afterwards; training is left as fast as the caller made it.
"""

from __future__ import annotations

import contextlib
import functools

import torch

# PyTorch's fp32_precision settings as (backend, op), parents first: "none" inherits the parent's value,
# and the top level's "none" is IEEE. torch.backends.cudnn.conv is ("cuda", "conv").
PRECISION_SETTINGS = (
    ("generic", "all"),
    ("mkldnn", "all"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
    ("cuda", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
)
DEVICE_BACKENDS = {"cpu": ("generic", "mkldnn"), "cuda": ("generic", "cuda")}
EXACT = ("ieee", "none")
AUTOCAST_DEVICES = {None: ("cpu", "cuda"), "cpu": ("cpu",), "cuda": ("cuda",)}


@functools.cache
def _settings(device_type: str | None) -> tuple[tuple[str, str], ...]:
    """The settings this build has that reach `device_type` (all of them for None)."""
    reach = DEVICE_BACKENDS.get(device_type)
    found = []
    for backend, op in PRECISION_SETTINGS:
        if reach is not None and backend not in reach:
            continue
        try:
            torch._C._get_fp32_precision_getter(backend, op)
        except (AttributeError, RuntimeError):  # a build without this backend, or without the setting
            continue
        found.append((backend, op))
    return tuple(found)


@functools.cache
def _cuda() -> bool:
    return torch.cuda.is_available()


def _set(setting: tuple[str, str], value: str) -> None:
    torch._C._set_fp32_precision_setter(*setting, value)


class exact_arithmetic(contextlib.ContextDecorator):  # noqa: N801 - used like a function, as contextlib's are
    """IEEE float32/float64 arithmetic in the block: no autocast, no TF32 or bf16 products, no cuDNN.

    Uses PyTorch's per-backend `fp32_precision` settings (which also override `allow_tf32` and
    `set_float32_matmul_precision`), never the legacy flags, which PyTorch refuses to mix with them. Only
    what is not IEEE already is changed (oneDNN rebuilds its kernels when its setting moves), so that
    with default settings entering the block costs microseconds: it runs around every certified batch.
    `device_type` ("cpu" or "cuda") limits it to the settings that reach that device; by default all.
    """

    def __init__(self, device_type: str | None = None) -> None:
        self.device_type = device_type
        self.saved: list[tuple[list, bool, contextlib.ExitStack | None]] = []  # one entry per nested entry

    def __enter__(self) -> exact_arithmetic:
        device_type = self.device_type
        get = torch._C._get_fp32_precision_getter
        changed = [(s, value) for s in _settings(device_type) if (value := get(*s)) not in EXACT]
        for setting, _ in changed:
            _set(setting, "ieee")
        cudnn = device_type != "cpu" and _cuda() and torch.backends.cudnn.enabled
        if cudnn:
            torch.backends.cudnn.enabled = False  # its FFT and Winograd convolutions are not inner products
        stack = None
        for device in AUTOCAST_DEVICES.get(device_type, ()):
            if torch.is_autocast_enabled(device):
                stack = stack or contextlib.ExitStack()
                stack.enter_context(torch.autocast(device, enabled=False))
        self.saved.append((changed, cudnn, stack))
        return self

    def __exit__(self, *exc) -> None:
        changed, cudnn, stack = self.saved.pop()
        if stack is not None:
            stack.close()
        for setting, value in changed:
            _set(setting, value)
        if cudnn:
            torch.backends.cudnn.enabled = True
