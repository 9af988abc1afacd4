"""GloRo training throughput: gloro-bench (PyTorch) against the official TensorFlow library, in one run.

Same CPU, architecture, batch size, power iterations per step, random [0, 1] data and step protocol
(warm-up steps excluded, then timed steps). The official library (PyPI gloro 1.1.1 with tensorflow-cpu
2.15.1) is installed by `official_tf.ensure_official_venv` into its own venv on first use. The two sides
alternate `--rounds` times so a change in machine load hits both; medians are reported. Each library runs
as its users get it: ours with `keep_freed_memory()`, as the pipeline's jobs do (`--default-malloc`
leaves glibc's defaults); TensorFlow as it comes, in its own process.

    .venv/bin/python benchmarks/versus_official.py [--architecture 2C2F] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from official_tf import ensure_official_venv, measure_official_throughput

import gloro
from gloro.cpu_memory import keep_freed_memory
from gloro.losses import gloro_cross_entropy

INPUT_SHAPES = {"2C2F": (1, 28, 28), "6C2F": (3, 32, 32)}
OFFICIAL_VENV = Path(__file__).resolve().with_name(".venv-official")


def ours_images_per_second(architecture: str, batch_size: int, steps: int, warmup: int, iterations: int) -> float:
    """Images per second of gloro-bench's training step: forward with ⊥, GloRo CE, backward, Adam."""
    shape = INPUT_SHAPES[architecture]
    net = gloro.GloroNet(gloro.create_model(architecture, shape, 10), 0.3, power_iterations=iterations).train()
    net.model.to(memory_format=torch.channels_last)  # as gloro.train does for conv nets
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.rand(batch_size, *shape, generator=generator).contiguous(memory_format=torch.channels_last),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(8)
    ]

    def step(index: int) -> None:
        x, y = batches[index % len(batches)]
        loss = gloro_cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for index in range(warmup):
        step(index)
    start = time.perf_counter()
    for index in range(steps):
        step(index)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="2C2F", choices=list(INPUT_SHAPES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--power-iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--default-malloc", action="store_true", help="do not call keep_freed_memory()")
    args = parser.parse_args()
    kept = False if args.default_malloc else keep_freed_memory()
    python = ensure_official_venv(OFFICIAL_VENV)
    ours, official, official_reports = [], [], []
    for _ in range(args.rounds):
        report = measure_official_throughput(
            python,
            args.architecture,
            args.batch_size,
            args.steps,
            args.warmup,
            args.power_iterations,
            refresh_iterates=False,
        )
        official_reports.append(report)
        official.append(report["images_per_second"])
        ours.append(
            ours_images_per_second(args.architecture, args.batch_size, args.steps, args.warmup, args.power_iterations)
        )
    result = {
        "architecture": args.architecture,
        "batch_size": args.batch_size,
        "power_iterations": args.power_iterations,
        "steps": args.steps,
        "ours_images_per_second": statistics.median(ours),
        "official_images_per_second": statistics.median(official),
        "speedup": statistics.median(ours) / statistics.median(official),
        "ours_rounds": ours,
        "official_rounds": official,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "keep_freed_memory": kept,
        "tensorflow": official_reports[-1].get("tensorflow_version"),
        "official_gloro": official_reports[-1].get("gloro_version"),
        "load_average_1m_end": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
