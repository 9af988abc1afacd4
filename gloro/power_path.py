"""Which code path advances each power iteration on this machine: the fastest, chosen by timing them here.

The power iteration can advance an iterate through the compiled loop (`gloro.native`), PyTorch products on
gathered columns, or convolutions; which is fastest depends on the processor's vector width, the BLAS, the
thread count and the operator's shape, not on the machine where the code was written. `choose` times each
path an operator has, interleaved, and keeps the fastest: per process, and in a file in the cache folder
named by this machine's processor, torch build, instruction-set limits, compiled build and thread count, so
that a machine measures each operator once and then always takes the same path (the paths' results differ
only in rounding; runs on one machine stay repeatable). $GLORO_POWER_PATH names a path to take wherever
an operator has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from gloro import atomic, native, timing

OVERRIDE = "GLORO_POWER_PATH"
PATHS = ("compiled", "columns", "convolutions", "matmul")  # every path some operator has (lipschitz.py)
MEASURED_SECONDS = 0.01  # each path runs at least this long in all when it is timed (about 30 ms an operator)
MIN_ROUNDS = 5  # and at least this many times; its median call decides

_chosen: dict[str, str] = {}  # signature → path, for this process


def machine() -> str:
    """What decides which path is fastest, besides the operator: processor, torch, ISA limits, the compiled
    library's build, threads."""
    parts = (
        native.processor(),
        torch.__version__,
        torch.backends.cpu.get_cpu_capability(),
        os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        library_build(),
        f"threads={torch.get_num_threads()}",
    )
    return "\0".join(parts)


def library_build() -> str:
    """The compiled library's file name, which names its sources, compiler, flags and processor: a changed
    C loop is timed afresh rather than judged by an older build's speed."""
    library = native.library()
    return Path(library._name).name if library is not None else "no compiled library"


def choices_file() -> Path:
    """The file that keeps this machine's choices (JSON: signature → chosen path and the seconds measured)."""
    digest = hashlib.sha256(machine().encode()).hexdigest()[:16]
    return native.cache_dir() / f"fastest-paths-{digest}.json"


def read_choices() -> dict[str, dict]:
    """This machine's recorded choices; empty when there are none yet or the file is unreadable."""
    try:
        recorded = json.loads(choices_file().read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def record_choice(signature: str, path: str, seconds: Mapping[str, float]) -> None:
    """Add one choice to the file, written atomically (a write lost to a concurrent job only costs a re-measure)."""
    recorded = read_choices()
    recorded[signature] = {"path": path, "seconds": dict(seconds)}
    with contextlib.suppress(OSError):  # a read-only cache folder: the choice still holds for this process
        atomic.write_json(choices_file(), recorded)


def measure(candidates: Mapping[str, Callable[[], object]], device: torch.device | None = None) -> dict[str, float]:
    """Median seconds per call of each candidate, after a warm-up call each, over interleaved rounds
    (`timing.interleaved_rounds`) until each has run `MIN_ROUNDS` times and `MEASURED_SECONDS` in all.
    CUDA work is waited for inside each call, so that its time is counted."""

    def waited(run: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            run()
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)

        return call

    sides = {name: waited(run) for name, run in candidates.items()}
    for call in sides.values():
        call()  # warm-up: first-call allocations and lazy initialisation
    rounds = timing.interleaved_rounds(sides, min_seconds=MEASURED_SECONDS, min_rounds=MIN_ROUNDS)
    return {name: statistics.median(seconds) for name, seconds in rounds.items()}


def choose(signature: str, candidates: Mapping[str, Callable[[], object]], device: torch.device | None = None) -> str:
    """The path to take for the operator `signature` names, among `candidates` (name → one run of that path).

    $GLORO_POWER_PATH wins where it names a candidate; else a choice made before on this machine; else the
    candidates are timed now (`measure`) and the fastest is kept. Running a candidate must leave no trace
    the caller minds (it restores what they change).
    """
    if not candidates:
        raise ValueError(f"no code path to choose from for {signature}")
    forced = os.environ.get(OVERRIDE, "").strip()
    if forced and forced not in PATHS:
        raise ValueError(f"{OVERRIDE}={forced!r} names no power-iteration path; use one of {', '.join(PATHS)}")
    if forced in candidates:
        return forced
    if len(candidates) == 1:
        return next(iter(candidates))
    key = f"{signature} paths={','.join(sorted(candidates))}"
    if key not in _chosen:
        recorded = read_choices().get(key, {}).get("path")
        if recorded in candidates:
            _chosen[key] = recorded
        else:
            seconds = measure(candidates, device)
            _chosen[key] = min(seconds, key=seconds.get)
            record_choice(key, _chosen[key], seconds)
    return _chosen[key]


def chosen() -> dict[str, str]:
    """The choices this process has made or read so far: signature → path."""
    return dict(_chosen)


def processor_summary() -> dict[str, str]:
    """The processor and instruction-set levels a timing was taken at, for a benchmark's record."""
    fields = {}
    for line in native.cpuinfo_lines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name", platform.processor() or platform.machine())
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {
        "processor": model,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "compiled_target": os.environ.get("GLORO_MARCH") or "native",
        "threads": str(torch.get_num_threads()),
    }


def forget_choices() -> None:
    """Drop this process's choices (the file is kept): the next operator is looked up or measured again."""
    _chosen.clear()
