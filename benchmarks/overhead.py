"""Cost of GloRo over a plain network: certification vs forward throughput, GloRo vs plain training step.

Targets (issues 2 and 14): certification throughput after freeze() ≥ 0.97 × plain forward throughput
(batch 1024), the forward pass being the user's `model(x)` under no_grad; GloRo training step ≤ 1.2 × a
plain training step (batch 256). `fixed_cost_share` says what certifying adds to GloroNet's own forward
pass, which runs the ReLUs in place (`gloro.inference`): the input-box check, the weight check, the margin.

Measurements are interleaved, the sides swapping order every round, and the median of many repeats is
reported, so a background load affects both sides alike. Training is timed with both networks in the
default (NCHW) layout and both in channels_last, the layout `gloro.train` uses. Each ratio is also given
from the fastest repeat of each side (`*_best`): on a shared VM noise only adds time, so the minimum is
the steadiest estimate of what each side costs on an idle machine; and as the median of each round's own
ratio (`*_paired`), which cancels drift in the machine's speed between rounds. Both sides run with
`keep_freed_memory()`, as the pipeline's jobs do (`--default-malloc` leaves glibc's defaults).

    .venv/bin/python benchmarks/overhead.py [--architectures 2C2F 6C2F] [--repeats 30] [--parts certification]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import gloro
from gloro.cpu_memory import keep_freed_memory
from gloro.losses import gloro_cross_entropy

SETTINGS = {  # input shape, power iterations per step (the paper's values)
    "2C2F": ((1, 28, 28), 10),
    "4C3F": ((1, 28, 28), 10),
    "6C2F": ((3, 32, 32), 5),
    "8C2F": ((3, 64, 64), 5),
}


def timings(functions: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Wall times of each function over `repeats` rounds, run round-robin so drift in load hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions.items())
    for _ in range(repeats):
        for name, function in order:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        order.reverse()  # each side goes first every other round: what the previous call leaves in cache evens out
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of the per-round ratios: both sides of a round ran seconds apart, under the same load."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def certification_ratio(architecture: str, batch_size: int, repeats: int) -> dict:
    """Certified points per second after freeze() over plain forward passes per second."""
    shape, iterations = SETTINGS[architecture]
    net = gloro.GloroNet(gloro.create_model(architecture, shape, 10), 0.3, power_iterations=iterations).freeze()
    x = torch.rand(batch_size, *shape)

    @torch.no_grad()
    def forward() -> None:
        net.model(x)

    @torch.no_grad()
    def own_forward() -> None:  # GloroNet's forward without autograd: ReLUs in place
        net.predict_clean(x)

    def certify() -> None:
        net.certify(x)

    times = timings({"forward": forward, "own_forward": own_forward, "certify": certify}, repeats)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {
        "architecture": architecture,
        "batch_size": batch_size,
        "forward_per_second": batch_size / seconds["forward"],
        "certified_per_second": batch_size / seconds["certify"],
        "ratio": seconds["forward"] / seconds["certify"],
        "ratio_best": min(times["forward"]) / min(times["certify"]),
        "ratio_paired": paired_ratio(times["forward"], times["certify"]),
        # what certifying adds to GloroNet's own forward pass (the input box, the weights, the margin)
        "fixed_cost_share": 1 - paired_ratio(times["own_forward"], times["certify"]),
    }


def training_step_ratio(architecture: str, batch_size: int, repeats: int, channels_last: bool) -> dict:
    """Seconds per GloRo training step over seconds per plain cross-entropy step, same network and batch."""
    shape, iterations = SETTINGS[architecture]
    net = gloro.GloroNet(gloro.create_model(architecture, shape, 10), 0.3, power_iterations=iterations).train()
    plain = gloro.create_model(architecture, shape, 10).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.model.to(memory_format=memory_format)
    plain.to(memory_format=memory_format)
    gloro_optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-4)
    x = torch.rand(batch_size, *shape).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,))

    def gloro_step() -> None:
        loss = gloro_cross_entropy(net(x), y)
        gloro_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gloro_optimizer.step()

    def plain_step() -> None:
        loss = F.cross_entropy(plain(x), y)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    times = timings({"plain": plain_step, "gloro": gloro_step}, repeats)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {
        "architecture": architecture,
        "batch_size": batch_size,
        "power_iterations": iterations,
        "channels_last": channels_last,
        "plain_step_seconds": seconds["plain"],
        "gloro_step_seconds": seconds["gloro"],
        "gloro_images_per_second": batch_size / seconds["gloro"],
        "ratio": seconds["gloro"] / seconds["plain"],
        "ratio_best": min(times["gloro"]) / min(times["plain"]),
        "ratio_paired": paired_ratio(times["gloro"], times["plain"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", nargs="+", default=["2C2F", "6C2F"], choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--default-malloc", action="store_true", help="do not call keep_freed_memory()")
    parts = ["certification", "training"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    args = parser.parse_args()
    kept = False if args.default_malloc else keep_freed_memory()
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": kept,
        "certification": [],
        "training": [],
    }
    for architecture in args.architectures:
        if "certification" in args.parts:
            results["certification"].append(certification_ratio(architecture, 1024, args.repeats))
        for channels_last in (False, True) if "training" in args.parts else ():
            results["training"].append(training_step_ratio(architecture, 256, args.repeats, channels_last))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
