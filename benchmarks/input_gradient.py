"""Attacks and the tightness search with and without `gloro.input_gradient`: the same points, interleaved.

Attacks take the input gradient through the first conv at every step. Where that conv has one input channel,
oneDNN's backward-data is slow, and `fold_input_gradients` replaces it with a GEMM and a col2im. This times
PGD (`gloro.pgd_accuracy`) and the global tightness search both ways, in turns, and prints each side's
median, the ratio and the results, which agree up to float32 reassociation in the gradient.
Without `--checkpoint`, a 2C2F with its initial weights stands in.

    .venv/bin/python benchmarks/input_gradient.py [--checkpoint results/runs/<experiment>/model.pt]
        [--dataset fashion-mnist] [--points 2048] [--steps 20] [--batch-size 1024] [--tightness-steps 100]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from unittest import mock

from interleaved import interleaved  # beside this script
from trained_points import add_arguments, net_and_points

import gloro
import gloro.attack
import gloro.tightness
from gloro.cpu_memory import keep_freed_memory
from gloro.tightness import global_tightness


@contextlib.contextmanager
def unfolded(model):
    yield 0


def timed(args, net, images, labels) -> dict:
    start = time.perf_counter()
    report = gloro.pgd_accuracy(
        net.model,
        images,
        labels,
        args.epsilon,
        steps=args.steps,
        restarts=1,
        batch_size=args.batch_size,
        progress=False,
    )
    middle = time.perf_counter()
    tightness = global_tightness(net, inputs=images[:256], steps=args.tightness_steps, seed=0, max_pairs=10)
    end = time.perf_counter()
    return {
        "pgd": middle - start,
        "tightness": end - middle,
        "robust_accuracy": report.metrics["robust_accuracy"],
        "tightness_max_lower_bound": tightness["max_lower_bound"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, points=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--tightness-steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    net, images, labels = net_and_points(args)
    net.freeze()

    def measure(side: str) -> dict:
        with contextlib.ExitStack() as stack:
            if side == "onednn":
                for module in (gloro.attack, gloro.tightness):
                    stack.enter_context(mock.patch.object(module, "fold_input_gradients", unfolded))
            return timed(args, net, images, labels)

    runs = interleaved(["folded", "onednn"], args.rounds, measure)
    median = {
        side: {part: statistics.median(run[part] for run in results) for part in ("pgd", "tightness")}
        for side, results in runs.items()
    }
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "points": args.points,
                "steps": args.steps,
                "runs": runs,
                "median_seconds": median,
                "speedup": {part: median["onednn"][part] / median["folded"][part] for part in ("pgd", "tightness")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
