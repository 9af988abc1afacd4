"""The local certifier's per-point cost against the same certifier with full products and full spectra.

Local certification bounds each layer's masked operator by the largest eigenvalue of a Gram of up to
n ≈ 1,568 per point (2C2F). `gloro.eigen` forms one triangle of that Gram (BLAS ?syrk) and asks LAPACK for
its top eigenvalue alone; the other side forms the whole Gram with a matrix product and computes every
eigenvalue with `torch.linalg.eigvalsh`, as the certifier did before. Both sides certify the same points
of the same checkpoint, interleaved round by round (the order swapping each round); the radii must agree to
1e-12 relative. Without `--checkpoint`, a 2C2F with its initial weights stands in (a trained net's
Grams have the same sizes; its spectrum is flatter).

    .venv/bin/python benchmarks/local_eigen.py [--checkpoint results/runs/<experiment>/model.pt]
        [--dataset fashion-mnist] [--points 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from unittest import mock

import torch
from trained_points import add_arguments, net_and_points  # beside this script

from gloro.certify import local, masked_operator
from gloro.cpu_memory import keep_freed_memory


def whole_spectrum_top(stack: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(stack)[..., -1]


def full_product(part: torch.Tensor, minus_from: torch.Tensor | None = None) -> torch.Tensor:
    product = part @ part.T
    return product if minus_from is None else minus_from - product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, points=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    net, images, _ = net_and_points(args)
    plan = local.LocalPlan(net)
    sides = {
        "gloro": lambda: local.certify_local(net, images, args.epsilon, plan),
        "full": lambda: _with_full_products_and_spectra(net, images, args.epsilon, plan),
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    radii: dict[str, torch.Tensor] = {}
    order = list(sides.items())
    for _ in range(args.rounds):
        for name, run in order:
            start = time.perf_counter()
            radii[name] = run().radius
            seconds[name].append(time.perf_counter() - start)
        order.reverse()
    ours, theirs = radii["gloro"], radii["full"]
    agreement = float(((ours - theirs).abs() / theirs.abs().clamp_min(1e-300)).max())
    if agreement > 1e-12:
        raise SystemExit(f"the two solvers' radii differ by {agreement:.3g} relative")
    per_point = {name: statistics.median(values) / args.points for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "points": args.points,
                "rounds": args.rounds,
                "seconds_per_point": per_point,
                "speedup": per_point["full"] / per_point["gloro"],
                "speedup_per_round": [b / a for a, b in zip(seconds["gloro"], seconds["full"])],
                "radii_max_relative_difference": agreement,
            },
            indent=2,
        )
    )


def _with_full_products_and_spectra(net, images, epsilon, plan):
    with (
        mock.patch.object(masked_operator, "largest_eigenvalues", whole_spectrum_top),
        mock.patch.object(masked_operator, "gram_lower", full_product),
    ):
        return local.certify_local(net, images, epsilon, plan)


if __name__ == "__main__":
    main()
