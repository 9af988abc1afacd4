"""Where a stage runs: the device a config names, and the provenance recorded with its results."""

from __future__ import annotations

import platform
import subprocess

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is present, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def provenance(device: torch.device) -> dict:
    """Git commit, torch version and device name, recorded beside every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"git_commit": commit, "torch_version": str(torch.__version__), "device": str(device), "device_name": name}


def cpu_name() -> str:
    """The processor's model name, the instruction set of PyTorch's kernels and the threads it uses, e.g.
    'AMD EPYC 7B13, AVX512, 2 threads': float32 sums run in an order set by all three, so trained nets differ."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as stream:
            model = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), model)
    except OSError:
        pass
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model or 'unknown CPU'}, {capability}, {threads} thread{'' if threads == 1 else 's'}"
