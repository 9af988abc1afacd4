"""What a training run cost: per-epoch seconds and peak memory, summed up as the steady-state cost of a run."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence

import torch

try:
    import resource
except ImportError:  # not on Windows: peak memory on the CPU is then not recorded
    resource = None


def training_cost(history: Sequence[dict]) -> dict:
    """The cost of a run from its history: the first epoch apart (it includes one-off warm-up: allocator,
    kernel selection, lazy initialisation), the later epochs as the steady-state cost: their mean, and their
    median, fastest and slowest, which say how far a slow moment of the machine moved it.

    later_epochs_* are None for a one-epoch run. peak_mem_mb is the largest per-epoch peak (on the CPU,
    the process's lifetime peak RSS, which includes whatever ran before training).
    """
    if not history:
        raise ValueError("no epochs in the history")
    later = list(history[1:])
    peaks = [row["peak_mem_mb"] for row in history if row.get("peak_mem_mb") is not None]
    return {
        "epochs": len(history),
        "total_seconds": sum(row["seconds"] for row in history),
        "first_epoch_seconds": history[0]["seconds"],
        "later_epochs_mean_seconds": sum(row["seconds"] for row in later) / len(later) if later else None,
        "later_epochs_median_seconds": statistics.median(row["seconds"] for row in later) if later else None,
        "later_epochs_min_seconds": min(row["seconds"] for row in later) if later else None,
        "later_epochs_max_seconds": max(row["seconds"] for row in later) if later else None,
        "later_epochs_images_per_second": (
            sum(row["images_per_second"] for row in later) / len(later) if later else None
        ),
        "peak_mem_mb": max(peaks) if peaks else None,
        "peak_mem_source": history[-1].get("peak_mem_source"),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mb` (only the GPU's allocator can reset it; the CPU's RSS peak cannot)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float | None, str | None]:
    """Peak memory in MiB and where it comes from: the CUDA allocator's peak since the last reset, or the
    process's peak resident set size (getrusage ru_maxrss: a lifetime peak, never reset).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    if resource is None:
        return None, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bytes_per_unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return peak * bytes_per_unit / 2**20, "cpu_process_max_rss"
