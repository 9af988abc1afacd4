"""The train stage: the experiment's recipe run to its final checkpoint, with history, cost and provenance."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, fields

import torch

from gloro.atomic import write_json
from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import provenance
from gloro.bench.results import TrainResult
from gloro.bench.run_files import TrainFiles, stage_files
from gloro.bench.stages.loading import new_net, write_csv
from gloro.checkpoint import save
from gloro.data import Split
from gloro.gloro_net import GloroNet
from gloro.history import finished_epochs
from gloro.methods.options import options_to_config
from gloro.schedules import SCHEDULES, schedule_to_config
from gloro.training import TrainingRecipe, train


def train_experiment(
    experiment: Experiment,
    files: TrainFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    progress: bool = True,
) -> TrainResult:
    """Train and save the final checkpoint, the best-on-test one, the history and the summary (config, data
    provenance, cost) at `files` (or under their standard names in a folder)."""
    files = stage_files(TrainFiles, files)
    train_split = data.load(experiment, "train", progress)
    net, recipe = new_net(experiment, train_split), experiment.recipe()
    test_split = data.load(experiment, "test", progress)
    scratch, warmup_file = files.scratch, files.warmup
    start = time.perf_counter()
    warmup = None
    if experiment.warmup_epochs and finished_epochs(scratch, recipe) and warmup_file.is_file():
        warmup = json.loads(warmup_file.read_text())  # warmed-up weights are in the scratch file: not again
    elif experiment.warmup_epochs:
        warmup = warm_up(net, train_split, experiment, device, progress)
        write_json(warmup_file, warmup)
    history = train(
        net,
        train_split.float_images(),
        train_split.labels,
        recipe,
        device=device,
        progress=progress,
        eval_images=test_split.float_images()[: experiment.eval_points],  # None slices nothing off
        eval_labels=test_split.labels[: experiment.eval_points],
        eval_certifier=experiment.certifiers[0],
        eval_every=experiment.eval_every,
        scratch=scratch,  # a killed job resumes after its last finished epoch
    )
    seconds = time.perf_counter() - start
    metadata = {"experiment": experiment.name, "method": experiment.method, "selection": "final"}
    save(net.cpu(), files.model, input_divisor=train_split.divisor, metadata=metadata)
    best = history.best
    if best is not None:  # kept for inspection, never mixed with the final model's numbers
        net.load_state_dict(best.state_dict)
        selected = {"experiment": experiment.name, "method": experiment.method, "selection": best.selection}
        selected["epoch"] = best.epoch
        save(net, files.best_model, input_divisor=train_split.divisor, metadata=selected)
    summary = TrainResult(
        experiment=asdict(experiment),
        method={"name": experiment.method, "label": experiment.label, "recipe": recipe_settings(recipe)},
        data=train_split.metadata(),
        provenance=provenance(device),
        train_seconds=seconds,
        epochs=len(history),
        final_train_loss=history[-1]["loss"],
        cost=history.cost(),
        warmup=warmup,
        # the paper's code kept the epoch with the best VRA on the *test* set: reported apart, labelled
        best_on_test=None
        if best is None
        else {
            "epoch": best.epoch,
            "vra": best.vra,
            "clean_accuracy": best.clean_accuracy,
            "epsilon": best.epsilon,
        },
    )
    write_csv(files.history, list(history))
    summary.write(files.summary)
    scratch.unlink(missing_ok=True)
    warmup_file.unlink(missing_ok=True)
    return summary


def warm_up(net: GloroNet, train_split: Split, experiment: Experiment, device: torch.device, progress: bool) -> dict:
    """The CIFAR recipe's warm-up: plain cross-entropy on the wrapped model, a fresh Adam at 1e-3, the same
    augmentation; returns the warm-up's cost summary."""
    recipe = TrainingRecipe(
        epochs=experiment.warmup_epochs,
        batch_size=experiment.batch_size,
        loss="clean",
        augmentation=experiment.augmentation,
        seed=experiment.seed,
    )
    history = train(net, train_split.float_images(), train_split.labels, recipe, device=device, progress=progress)
    return {"epochs": len(history), **history.cost()}


def recipe_settings(recipe: TrainingRecipe) -> dict:
    """The training recipe as JSON, schedules in their config form: recorded with every run's results."""
    settings = {}
    for item in fields(recipe):
        value = getattr(recipe, item.name)
        if item.name == "options":
            value = options_to_config(value)
        settings[item.name] = schedule_to_config(value) if isinstance(value, tuple(SCHEDULES.values())) else value
    return settings
