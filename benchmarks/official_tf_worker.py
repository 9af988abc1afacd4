"""Time GloRo training with the official TensorFlow `gloro` library: steps on a pool of random batches, or
(`--data`) whole `fit` epochs over given arrays.

Runs inside the separate TF venv made by `benchmarks/official_tf.py`; prints
one JSON line on stdout so the PyTorch benchmark can compare against it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

# This is the official TF library from the TF venv, not the project's package of
# the same name: the parent runs us with `python -I`, so neither the repo nor
# PYTHONPATH is on sys.path (checked in `check_official_gloro`). Only the top
# level is imported so ruff's first-party detection of the project's `gloro`
# cannot reorder these imports.
import gloro

EPSILON = 0.3
LEARNING_RATE = 1e-3
NUM_CLASSES = 10
DATA_POOL_BATCHES = 8

# (filters, kernel, stride) per conv layer, then dense widths, then input shape.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "2C2F": {
        "input_shape": (28, 28, 1),
        "convs": [(16, 4, 2), (32, 4, 2)],
        "dense": [100],
    },
    "6C2F": {
        "input_shape": (32, 32, 3),
        "convs": [
            (32, 3, 1),
            (32, 3, 1),
            (32, 4, 2),
            (64, 3, 1),
            (64, 3, 1),
            (64, 4, 2),
        ],
        "dense": [512],
    },
}

NOTES = (
    "gloro 1.1.1: power iterations per step are set by GloroNet(num_iterations=N), stored as a "
    "tf.Variable in its LipschitzMargin layer. Every forward pass of that layer recomputes the global "
    "Lipschitz bound: for each Conv/Dense layer except the last it runs N power-method iterations "
    "(tf.while_loop) from a persistent iterate variable, then overwrites the iterate; gradients flow "
    "through the loop (no stop_gradient). The last Dense kernel enters exactly, via differences of its "
    "class columns. GloroNet.fit prepends UpdatePowerIterates automatically (unless "
    "fit(update_iterates=False); see refresh_iterates), but that callback does NOT act per batch: it "
    "re-randomises and re-converges the iterates "
    "(tolerance 1e-2, 100 iterations per probe) at train begin, epoch end and test begin, and to 1e-4 "
    "at train end, all outside the timed window here."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the benchmark settings chosen by the parent process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="2C2F", choices=sorted(ARCHITECTURES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--power-iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=EPSILON)
    parser.add_argument("--data", help="an .npz of images (N, H, W, C) float32 and labels: time whole fit epochs")
    parser.add_argument("--epochs", type=int, default=3, help="with --data: fit epochs, the first not counted")
    parser.add_argument(
        "--no-refresh-iterates",
        action="store_true",
        help="fit(update_iterates=False): skip the library's untimed train-begin/epoch-end/train-end "
        "power-iterate convergence (minutes on 6C2F); the timed per-step work is unchanged",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.warmup_steps < 0:
        parser.error("steps and batch size must be >= 1, warmup >= 0")
    if args.power_iterations < 1:
        parser.error("power iterations must be >= 1")
    if args.data and args.epochs < 2:
        parser.error("--epochs must be >= 2 with --data (the first is warm-up)")
    return args


def check_official_gloro() -> None:
    """Fail fast if `gloro` resolved to anything but the official TF package."""
    if not hasattr(gloro, "GloroNet") or "site-packages" not in (gloro.__file__ or ""):
        raise SystemExit(f"expected the official gloro package, got {gloro.__file__}")


def build_base_model(architecture: str) -> tf.keras.Model:
    """Build the paper's plain (unwrapped) conv net as a functional model."""
    spec = ARCHITECTURES[architecture]
    layers = tf.keras.layers
    inputs = layers.Input(shape=spec["input_shape"])
    x = inputs
    for filters, kernel, stride in spec["convs"]:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    for width in spec["dense"]:
        x = layers.Dense(width, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES)(x)
    return tf.keras.Model(inputs, outputs)


def build_gloro_model(architecture: str, power_iterations: int, epsilon: float = EPSILON) -> gloro.GloroNet:
    """Wrap the base net in the official GloroNet and compile it as the paper does."""
    model = gloro.GloroNet(
        model=build_base_model(architecture),
        epsilon=epsilon,
        num_iterations=power_iterations,
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        # GloroNet.compile maps this string to gloro.training.losses.Crossentropy(sparse=True).
        loss="sparse_crossentropy",
    )
    return model


def make_dataset(architecture: str, batch_size: int, seed: int) -> tf.data.Dataset:
    """Make an endless cached stream of uniform [0,1] images with random labels."""
    rng = np.random.default_rng(seed)
    count = DATA_POOL_BATCHES * batch_size
    shape = (count, *ARCHITECTURES[architecture]["input_shape"])
    images = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=(count,)).astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(batch_size, drop_remainder=True).cache().repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


class StepTimer(tf.keras.callbacks.Callback):
    """Record wall time from the first timed batch's start to each batch's end."""

    def __init__(self, warmup_steps: int) -> None:
        """Remember how many leading batches to leave out of the timing."""
        super().__init__()
        self.warmup_steps = warmup_steps
        self.start: float | None = None
        self.batch_ends: list[float] = []
        self.last_loss: float | None = None
        self.fit_seconds: float | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Start the clock when the first non-warm-up batch begins."""
        if batch == self.warmup_steps:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Stamp each timed batch; Keras has synced the loss to Python by now."""
        if batch >= self.warmup_steps:
            self.batch_ends.append(time.perf_counter())
            self.last_loss = float((logs or {}).get("loss", float("nan")))


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall time of each fit epoch, from its start to the end of its epoch-end callbacks: GloroNet.fit
    prepends UpdatePowerIterates, whose epoch-end refresh of the iterates is part of what its users run."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.starts.append(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def run_epochs(args: argparse.Namespace) -> dict[str, Any]:
    """`fit` over the arrays of `args.data`, shuffled every epoch, at the given batch size; seconds per epoch."""
    arrays = np.load(args.data)
    images, labels = arrays["images"].astype(np.float32), arrays["labels"].astype(np.int64)
    expected = tuple(ARCHITECTURES[args.architecture]["input_shape"])
    if tuple(images.shape[1:]) != expected:
        raise SystemExit(f"{args.architecture} takes images of shape {expected}, got {tuple(images.shape[1:])}")
    model = build_gloro_model(args.architecture, args.power_iterations, args.epsilon)
    timer = EpochTimer()
    model.fit(
        images,
        labels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        update_iterates=not args.no_refresh_iterates,
        callbacks=[timer],
        verbose=0,
    )
    seconds = [end - start for start, end in zip(timer.starts, timer.ends)]
    return {
        "implementation": "official-tensorflow-gloro",
        "mode": "fit epochs",
        "architecture": args.architecture,
        "examples": len(labels),
        "batch_size": args.batch_size,
        "power_iterations": int(model.num_iterations),
        "epsilon": float(model.epsilon),
        "refresh_iterates": not args.no_refresh_iterates,
        "epoch_seconds": seconds[1:],
        "first_epoch_seconds": seconds[0],
        "tensorflow_version": tf.__version__,
        "gloro_version": gloro.__version__,
        "threading": threading_info(),
        "notes": NOTES,
    }


def run_training(model: gloro.GloroNet, dataset: tf.data.Dataset, args: argparse.Namespace) -> StepTimer:
    """Run one `fit` epoch of warm-up plus timed steps and return the timer."""
    timer = StepTimer(args.warmup_steps)
    started = time.perf_counter()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=args.warmup_steps + args.steps,
        # Unless disabled, GloroNet.fit prepends its own UpdatePowerIterates(verbose=True) callback.
        update_iterates=not args.no_refresh_iterates,
        callbacks=[timer],
        verbose=0,
    )
    timer.fit_seconds = time.perf_counter() - started
    return timer


def step_statistics(timer: StepTimer) -> dict[str, float]:
    """Turn batch end stamps into total and median per-step seconds."""
    stamps = [timer.start, *timer.batch_ends]
    durations = sorted(b - a for a, b in itertools.pairwise(stamps))
    return {
        "elapsed_seconds": timer.batch_ends[-1] - timer.start,
        "median_step_seconds": durations[len(durations) // 2],
    }


def threading_info() -> dict[str, int | None]:
    """Report TF's thread-pool settings (0 means TF picks) and the visible cores."""
    return {
        "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
        "sched_affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def build_report(
    args: argparse.Namespace,
    model: gloro.GloroNet,
    timer: StepTimer,
    load_before: float,
) -> dict[str, Any]:
    """Collect the measured throughput and the environment into one dict."""
    stats = step_statistics(timer)
    images = args.steps * args.batch_size
    return {
        "implementation": "official-tensorflow-gloro",
        "architecture": args.architecture,
        "input_shape": list(ARCHITECTURES[args.architecture]["input_shape"]),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "power_iterations": int(model.num_iterations),
        "epsilon": float(model.epsilon),
        "images": images,
        "refresh_iterates": not args.no_refresh_iterates,
        "fit_wall_seconds": timer.fit_seconds,
        "elapsed_seconds": stats["elapsed_seconds"],
        "images_per_second": images / stats["elapsed_seconds"],
        "median_step_seconds": stats["median_step_seconds"],
        "median_images_per_second": args.batch_size / stats["median_step_seconds"],
        "final_loss": timer.last_loss,
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "tensorflow_version": tf.__version__,
        "gloro_version": gloro.__version__,
        "gloro_path": os.path.dirname(gloro.__file__),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "threading": threading_info(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
        "notes": NOTES,
    }


def main(argv: list[str] | None = None) -> int:
    """Build, train and time the model, then print the JSON report on stdout."""
    args = parse_args(argv)
    check_official_gloro()
    load_before = os.getloadavg()[0]  # other work on these 2 cores skews the numbers
    tf.keras.utils.set_random_seed(args.seed)
    # Keep library chatter off stdout so the parent reads exactly one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        if args.data:
            print(json.dumps(run_epochs(args)), file=sys.__stdout__, flush=True)
            return 0
        model = build_gloro_model(args.architecture, args.power_iterations, args.epsilon)
        dataset = make_dataset(args.architecture, args.batch_size, args.seed)
        timer = run_training(model, dataset, args)
        report = build_report(args, model, timer, load_before)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
