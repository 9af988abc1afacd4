"""What users run: whole `gloro.train` epochs on real data against plain PyTorch epochs, side by side.

Each round trains, in alternation, a GloRo Net with `gloro.train` (its per-epoch certification of a test
set included, timed apart) and the same architecture with a plain PyTorch loop (same batches of the same
shuffled data, Adam, cross-entropy, the same memory layout and `keep_freed_memory()`). The first
epoch of each call is warm-up and is not counted. Reported: seconds per epoch of each side (median over
rounds and the later epochs), their ratio, the range of per-round ratios, and the per-epoch evaluation's
share of a GloRo epoch. Fashion-MNIST (60,000 × 28 × 28, Debian's `dataset-fashion-mnist`) stands in for
MNIST; CIFAR-shaped runs use seeded random images of 3 × 32 × 32. With `--official`, each round also
times the official TensorFlow library's `GloroNet.fit` over the same arrays (its own venv, installed on first
use by `official_tf.py`), epochs counted the same way and including its epoch-end refresh of the iterates.

    .venv/bin/python benchmarks/epochs.py [--cases fashion-2c2f cifar-6c2f] [--rounds 2] [--epochs 3] [--official]
        [--eval-every 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import gloro
from gloro import power_path
from gloro.cpu_memory import keep_freed_memory
from gloro.data.prepare import load_dataset
from gloro.training import TrainingRecipe

OFFICIAL_VENV = Path(__file__).resolve().with_name(".venv-official")

CASES = {  # architecture, power iterations, ε, where the data comes from
    "fashion-2c2f": ("2C2F", 10, 0.45, "fashion-mnist"),
    "cifar-6c2f": ("6C2F", 5, 0.141, "random-cifar"),
}


def case_data(source: str, examples: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and test images (float32 in [0, 1]) and labels."""
    if source == "random-cifar":
        generator = torch.Generator().manual_seed(0)
        n = examples or 10_000
        images = torch.rand(n + 1000, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (n + 1000,), generator=generator)
        return images[:n], labels[:n], images[n:], labels[n:]
    train, test = (load_dataset(source, split, progress=False) for split in ("train", "test"))
    images, labels = train.float_images(), train.labels
    if examples:
        images, labels = images[:examples], labels[:examples]
    return images, labels, test.float_images()[:2000], test.labels[:2000]


def gloro_epochs(architecture, iterations, epsilon, data, epochs, batch_size) -> dict:
    """`gloro.train` for `epochs` epochs with per-epoch certification; seconds of the later epochs."""
    images, labels, test_images, test_labels = data
    model = gloro.create_model(architecture, tuple(images.shape[1:]), 10)
    net = gloro.GloroNet(model, epsilon, power_iterations=iterations)
    recipe = TrainingRecipe(epochs=epochs, batch_size=batch_size)
    start = time.perf_counter()
    history = gloro.train(net, images, labels, recipe, progress=False, eval_images=test_images, eval_labels=test_labels)
    wall = time.perf_counter() - start
    rows = history[1:]
    return {
        "epoch_seconds": [row["seconds"] for row in rows],
        "eval_seconds": [row["eval_seconds"] for row in rows],
        "wall_seconds": wall,
    }


def plain_epochs(architecture, data, epochs, batch_size) -> dict:
    """The same network trained with a plain PyTorch loop: shuffle, batches, Adam, cross-entropy."""
    images, labels, _, _ = data
    model = gloro.create_model(architecture, tuple(images.shape[1:]), 10).train()
    model.to(memory_format=torch.channels_last)  # the layout gloro.train uses
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(batch_size):
            x = images[batch].contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": seconds[1:]}


def run_case(
    name: str, rounds: int, epochs: int, batch_size: int, examples: int | None, official: bool, eval_every: int = 1
) -> dict:
    architecture, iterations, epsilon, source = CASES[name]
    data = case_data(source, examples)
    per_round, gloro_all, plain_all, eval_all, official_all = [], [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        arrays, python = None, None
        if official:
            from official_tf import ensure_official_venv, measure_official_epochs  # stdlib only, beside this script

            python = ensure_official_venv(OFFICIAL_VENV)
            arrays = Path(folder) / "train.npz"  # channels last, as Keras takes them
            np.savez(arrays, images=data[0].permute(0, 2, 3, 1).numpy(), labels=data[1].numpy())
        for _ in range(rounds):
            ours = gloro_epochs(architecture, iterations, epsilon, data, epochs, batch_size)
            plain = plain_epochs(architecture, data, epochs, batch_size)
            if official:
                theirs = measure_official_epochs(python, architecture, arrays, epochs, batch_size, iterations, epsilon)
                official_all += theirs["epoch_seconds"]  # the later epochs, as on our sides
            gloro_all += ours["epoch_seconds"]
            plain_all += plain["epoch_seconds"]
            eval_all += ours["eval_seconds"]
            per_round.append(statistics.median(ours["epoch_seconds"]) / statistics.median(plain["epoch_seconds"]))
    gloro_epoch, plain_epoch = statistics.median(gloro_all), statistics.median(plain_all)
    versus_official = {}
    if official:
        official_epoch = statistics.median(official_all)
        versus_official = {
            "official_epoch_seconds": official_epoch,
            "official_epoch_seconds_all": official_all,
            "official_over_gloro": official_epoch / gloro_epoch,
            "official_images_per_second": len(data[1]) / official_epoch,
        }
    return {
        "case": name,
        "architecture": architecture,
        "examples": len(data[1]),
        "batch_size": batch_size,
        "power_iterations": iterations,
        "gloro_epoch_seconds": gloro_epoch,
        "plain_epoch_seconds": plain_epoch,
        "ratio": gloro_epoch / plain_epoch,
        "ratio_per_round": per_round,
        "eval_seconds": statistics.median(eval_all),
        "eval_share_of_gloro_epoch": statistics.median(eval_all) / gloro_epoch,
        # certifying after every k-th epoch only (`eval_every`, 5 in config/paper.yaml) spreads one evaluation
        # over k epochs; every epoch is evaluated here, so that each evaluation is timed
        "eval_every": eval_every,
        "eval_share_amortized": statistics.median(eval_all) / eval_every / gloro_epoch,
        "gloro_images_per_second": len(data[1]) / gloro_epoch,
        "plain_images_per_second": len(data[1]) / plain_epoch,
        **versus_official,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per call, the first one not counted")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--examples", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--official", action="store_true", help="also time the official TF library's fit")
    parser.add_argument("--eval-every", type=int, default=1, help="report the evaluation's share amortized over k")
    args = parser.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        parser.error("--epochs must be >= 2 (the first is warm-up) and --rounds >= 1")
    if args.eval_every < 1:
        parser.error("--eval-every must be >= 1")
    results = {
        "torch": torch.__version__,
        **power_path.processor_summary(),
        "keep_freed_memory": keep_freed_memory(),
        "cases": [
            run_case(case, args.rounds, args.epochs, args.batch_size, args.examples, args.official, args.eval_every)
            for case in args.cases
        ],
        "power_iteration_paths": power_path.chosen(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
