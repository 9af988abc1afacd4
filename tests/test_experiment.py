"""Experiments from config entries: validation, and the CIFAR recipe's warm-up before GloRo training."""

import json

import pytest
import torch

import gloro
from gloro.experiment import DataOptions, Experiment, train_experiment

SETTINGS = {
    "dataset": "digits",
    "architecture": "2C2F",
    "train_epsilon": 0.45,
    "eval_epsilon": 0.3,
    "epochs": 2,
    "batch_size": 64,
    "subset": {"train": 256, "test": 64},
}


def test_unknown_or_missing_keys_are_named():
    with pytest.raises(ValueError, match="epoch"):
        Experiment.from_config("bad", {**SETTINGS, "epoch": 3})
    with pytest.raises(ValueError, match="dataset"):
        Experiment.from_config("bad", {k: v for k, v in SETTINGS.items() if k != "dataset"})
    with pytest.raises(ValueError, match="unknown schedule kind"):
        Experiment.from_config("bad", {**SETTINGS, "learning_rate": {"kind": "cosine"}}).recipe()


def test_warm_up_epochs_run_plain_cross_entropy_before_gloro_training(tmp_path):
    experiment = Experiment.from_config("warm", {**SETTINGS, "warmup_epochs": 2})
    summary = train_experiment(experiment, tmp_path, DataOptions(), torch.device("cpu"), progress=False)
    assert summary["warmup"]["epochs"] == 2 and summary["epochs"] == 2
    recorded = json.loads((tmp_path / "train.json").read_text())
    assert recorded["warmup"]["epochs"] == 2
    assert not (tmp_path / "scratch.pt").exists()  # removed once training finished
    assert (tmp_path / "model.pt").is_file()
    best = gloro.load(tmp_path / "model_best_on_test.pt")
    assert best.metadata["epoch"] == recorded["best_on_test"]["epoch"]
    assert best.metadata["selection"] != "final"
