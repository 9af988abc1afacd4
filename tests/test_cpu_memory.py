"""keep_freed_memory: with it, a process that frees and reallocates large tensors stops page-faulting them in."""

import platform
import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from gloro.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):  # what a training step does with its activations: 48 MiB written, then freed
    torch.ones(12 << 20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    """Minor page faults of 40 allocate-write-free rounds in a fresh interpreter."""
    output = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = output.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_activations_are_reused_instead_of_faulted_in_again():
    default_applied, default_faults = page_faults("default")
    kept_applied, kept_faults = page_faults("keep")
    assert default_applied == "None" and kept_applied == "True"
    pages = (48 << 20) // 4096
    assert default_faults >= 30 * pages  # every round maps its 48 MiB afresh
    assert kept_faults <= 10 * pages  # only the first few rounds touch new memory (3 or 4 here)
