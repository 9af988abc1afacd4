"""PGD's cost per image at several batch sizes: the same points, the same checkpoint, interleaved.

`evaluation.batch_size` sets how many points an attack takes at a time. On a CPU a larger batch amortises
each step's fixed costs (calls into oneDNN, autograd bookkeeping, torchattacks' Python loop). The robust
accuracy at each size is printed beside its time: the random starts fall differently with the batches, so
it may move by a few points in 10,000, never systematically.
Without `--checkpoint`, a 2C2F with its initial weights stands in.

    .venv/bin/python benchmarks/attack_batch.py [--checkpoint results/runs/<experiment>/model.pt]
        [--dataset fashion-mnist] [--points 2048] [--steps 20] [--restarts 2] [--batch-sizes 256 512 1024]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from interleaved import interleaved  # beside this script
from trained_points import add_arguments, net_and_points

import gloro
from gloro.cpu_memory import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, points=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    net, images, labels = net_and_points(args)
    net.freeze()
    accuracy: dict[int, float] = {}

    def measure(size: int) -> float:
        start = time.perf_counter()
        report = gloro.pgd_accuracy(
            net.model,
            images,
            labels,
            args.epsilon,
            steps=args.steps,
            restarts=args.restarts,
            batch_size=size,
            progress=False,
        )
        accuracy[size] = report.metrics["robust_accuracy"]
        return time.perf_counter() - start

    seconds = interleaved(args.batch_sizes, args.rounds, measure)
    smallest = args.batch_sizes[0]
    median = {size: statistics.median(values) for size, values in seconds.items()}
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "points": args.points,
                "steps": args.steps,
                "restarts": args.restarts,
                "seconds": seconds,
                "median_seconds": median,
                f"speedup_over_{smallest}": {size: median[smallest] / median[size] for size in median},
                "robust_accuracy": accuracy,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
