"""glibc malloc settings for training on the CPU: reuse freed activations instead of handing them back.

PyTorch allocates CPU tensors with the C library's malloc. By default glibc maps every block above a
(self-adjusting, at most 32 MiB) threshold afresh and returns freed memory at the top of its heap to the
system, so each training step page-faults its activations in again (measured in benchmarks/README.md).
On GPUs, PyTorch's caching allocator avoids exactly this.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
HEAP_BLOCKS_UP_TO = 1 << 30  # blocks below 1 GiB come from the heap, whose memory is reused
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes: freed heap memory stays with the process


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse by this process; True if applied, False elsewhere.

    The cost: the process holds on to its peak memory until it exits, as PyTorch's CUDA allocator does.
    Call it once at the start of a training or evaluation process (the pipeline's jobs and `gloro demo` do);
    other C libraries (macOS, Windows, musl) are left alone.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
