"""What every stage starts from: the experiment's net, fresh or trained, and CSV written atomically."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from gloro.architectures import create_model
from gloro.atomic import atomic_path
from gloro.bench.experiment import Experiment
from gloro.checkpoint import load
from gloro.data import Split
from gloro.gloro_net import GloroNet


def new_net(experiment: Experiment, split: Split) -> GloroNet:
    """The experiment's net as training starts: its architecture for `split`'s shape and classes, initialised
    from its seed, at its first epoch's ε."""
    torch.manual_seed(experiment.seed)
    model = create_model(
        experiment.architecture,
        split.shape,
        split.num_classes,
        activation=experiment.activation,
        init=experiment.init,
        seed=experiment.seed,
    )
    return GloroNet(
        model,
        experiment.recipe().epsilon(0),
        eval_epsilon=experiment.eval_epsilon,
        power_iterations=experiment.power_iterations,
        seed=experiment.seed,
    )


def load_for_evaluation(experiment: Experiment, model: Path, device: torch.device) -> tuple[GloroNet, dict]:
    """The trained net, evaluated at the config's eval ε rather than the one saved in its checkpoint (they
    differ when the config changed after training), and a record of both for the stage's result."""
    net = load(model, map_location=device)
    record = {"eval_epsilon": experiment.eval_epsilon, "eval_epsilon_from": "config"}
    if net.eval_epsilon != experiment.eval_epsilon:
        record["checkpoint_eval_epsilon"] = net.eval_epsilon
    net.eval_epsilon = experiment.eval_epsilon
    return net, record


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write dict rows as CSV atomically (columns from the first row)."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path
