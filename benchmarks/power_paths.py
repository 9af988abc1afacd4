"""Each power-iteration path on each layer of an architecture: microseconds per advance, on this machine.

For every Linear and Conv2d bound of a freshly initialised GloRo Net, each path the layer has (compiled,
columns, convolutions, matmul) advances the iterate `--steps` steps; median over `--blocks` blocks of
`--repeats` calls, the paths interleaved block by block (`gloro.timing.interleaved_rounds`). Also prints
which path `gloro.power_path` chose.

    .venv/bin/python benchmarks/power_paths.py [--architecture 2C2F] [--input 1 28 28] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import gloro
from gloro import power_path, timing
from gloro.lipschitz import PowerIterationBound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="2C2F")
    parser.add_argument("--input", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    net = gloro.GloroNet(gloro.create_model(args.architecture, tuple(args.input), 10), 0.3)
    rows = []
    for bound, layer in zip(net.bounds, net.layers):
        if not isinstance(bound, PowerIterationBound):
            continue
        weight, start = layer.weight.detach(), bound.iterate.clone()

        def calls(path: str, bound=bound, weight=weight):
            def run() -> None:
                for _ in range(args.repeats):
                    bound.advance(weight, args.steps, path)

            return run

        sides = {path: calls(path) for path in bound.paths(weight)}
        for side in sides.values():
            side()  # warm-up
        rounds = timing.interleaved_rounds(sides, min_seconds=0.0, min_rounds=args.blocks, max_rounds=args.blocks)
        bound.iterate.copy_(start)
        rows.append(
            {
                "layer": repr(layer),
                "microseconds": {
                    path: round(1e6 * statistics.median(times) / args.repeats, 1) for path, times in rounds.items()
                },
                "chosen": bound.path_for(weight),
            }
        )
    print(json.dumps({**power_path.processor_summary(), "torch": torch.__version__, "layers": rows}, indent=2))


if __name__ == "__main__":
    main()
