"""What benchmarks that time evaluation of one net share: a checkpoint (or an untrained 2C2F) and test points."""

from __future__ import annotations

import argparse

import torch

import gloro
from gloro.checkpoint import load
from gloro.data.prepare import load_dataset


def add_arguments(parser: argparse.ArgumentParser, points: int) -> None:
    """--checkpoint, --dataset, --epsilon and --points (default `points`)."""
    parser.add_argument("--checkpoint", default=None, help="a model.pt; default: a 2C2F with its initial weights")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--points", type=int, default=points)


def net_and_points(args: argparse.Namespace) -> tuple[gloro.GloroNet, torch.Tensor, torch.Tensor]:
    """The net (from `--checkpoint`, else an untrained 2C2F) and the first `--points` test images and labels."""
    if args.checkpoint:
        net = load(args.checkpoint)
    else:
        net = gloro.GloroNet(gloro.create_model("2C2F", (1, 28, 28), 10), args.epsilon)
    test = load_dataset(args.dataset, "test", progress=False)
    return net, test.float_images()[: args.points], test.labels[: args.points]
