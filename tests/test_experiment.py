"""Experiments from config entries: validation, and the CIFAR recipe's warm-up before GloRo training."""

import json

import pytest
import torch

import gloro
from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import cpu_name
from gloro.bench.stages import (
    attack_experiment,
    bounds_experiment,
    certify_experiment,
    read_certificates,
    train_experiment,
)
from gloro.bench.stages import train as train_stage

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
    assert summary.warmup["epochs"] == 2 and summary.epochs == 2
    recorded = json.loads((tmp_path / "train.json").read_text())
    assert recorded["warmup"]["epochs"] == 2
    assert not (tmp_path / "scratch.pt").exists()  # removed once training finished
    assert (tmp_path / "model.pt").is_file()
    best = gloro.load(tmp_path / "model_best_on_test.pt")
    assert best.metadata["epoch"] == recorded["best_on_test"]["epoch"]
    assert best.metadata["selection"] != "final"


def test_a_job_killed_after_its_warm_up_resumes_without_warming_up_again(tmp_path, monkeypatch):
    experiment = Experiment.from_config("warm", {**SETTINGS, "warmup_epochs": 1})
    warm_ups = []
    original = train_stage.warm_up
    monkeypatch.setattr(train_stage, "warm_up", lambda *args: warm_ups.append(1) or original(*args))

    def killed(*args):
        raise KeyboardInterrupt  # after the last epoch's scratch file was written, before the outputs

    with monkeypatch.context() as patch:
        patch.setattr(train_stage, "write_csv", killed)
        with pytest.raises(KeyboardInterrupt):
            train_experiment(experiment, tmp_path, DataOptions(), torch.device("cpu"), progress=False)
    assert (tmp_path / "scratch.pt").is_file() and (tmp_path / "warmup.json").is_file()
    summary = train_experiment(experiment, tmp_path, DataOptions(), torch.device("cpu"), progress=False)
    assert warm_ups == [1]
    assert summary.warmup["epochs"] == 1 and summary.epochs == 2
    assert not (tmp_path / "scratch.pt").exists() and not (tmp_path / "warmup.json").exists()


def test_the_evaluation_stages_use_the_configs_eval_epsilon_and_say_so(tmp_path):
    trained = Experiment.from_config("eps", SETTINGS)  # checkpoint saved with eval ε 0.3
    train_experiment(trained, tmp_path, DataOptions(), torch.device("cpu"), progress=False)
    changed = Experiment.from_config("eps", {**SETTINGS, "eval_epsilon": 0.1})  # the config changed since
    cpu = torch.device("cpu")
    certified = certify_experiment(changed, tmp_path, DataOptions(), cpu, radii=[0.1], batch_size=64)
    attacked = attack_experiment(changed, tmp_path, DataOptions(), cpu, {"steps": 3, "restarts": 1, "step_size": None})
    bounds = bounds_experiment(changed, tmp_path, DataOptions(), cpu, points=8, tightness_steps=2, tightness_pairs=2)
    for result in (certified, attacked, bounds):
        assert result.eval_epsilon == 0.1 and result.eval_epsilon_from == "config"
        assert result.checkpoint_eval_epsilon == 0.3
    assert certified.epsilon == 0.1 and attacked.attack_settings["eps"] == 0.1
    assert {row["epsilon"] for row in bounds.certifiers} == {0.1}
    assert json.loads((tmp_path / "attack.json").read_text())["eval_epsilon"] == 0.1
    # each stage says where its time went
    assert set(attacked.seconds) == {"pgd", "audits"} and attacked.seconds["pgd"] > 0
    # the audits' own times, summed (0 when PGD's examples covered every certified point)
    assert attacked.seconds["audits"] == sum(audit["seconds"] for audit in attacked.audits.values())
    assert set(bounds.seconds) == {"tightness", "certifiers"} and all(v > 0 for v in bounds.seconds.values())


def test_autoattack_runs_beside_pgd_when_the_config_asks_and_is_recorded(tmp_path):
    certified_some = {"epochs": 10, "subset": {"test": 64}}  # the whole digits training split: some points certify
    experiment = Experiment.from_config("aa", {**SETTINGS, **certified_some})
    cpu = torch.device("cpu")
    train_experiment(experiment, tmp_path, DataOptions(), cpu, progress=False)
    certify_experiment(experiment, tmp_path, DataOptions(), cpu, radii=[0.3], batch_size=64)
    pgd = {"steps": 5, "restarts": 1, "step_size": None}
    options = {"enabled": True, "points": 16, "steps": 5, "square_queries": 20}
    result = attack_experiment(
        experiment, tmp_path, DataOptions(), cpu, pgd, progress=False, autoattack=options, batch_size=7
    )
    # the evaluation's batch size reaches every attack: PGD, AutoAttack and each audit
    assert result.audits
    batch_sizes = [result.attack_settings["batch_size"], result.autoattack_settings["batch_size"]]
    assert batch_sizes + [audit["settings"]["batch_size"] for audit in result.audits.values()] == [7] * (
        2 + len(result.audits)
    )
    assert result.autoattack_points == 16 and 0 <= result.autoattack_accuracy <= 1
    assert [c["steps"] for c in result.autoattack_settings["components"][:3]] == [5, 5, 5]
    without = attack_experiment(experiment, tmp_path, DataOptions(), cpu, pgd, progress=False)
    assert without.autoattack_accuracy is None and without.autoattack_settings is None
    assert result.seconds["autoattack"] > 0 and "autoattack" not in without.seconds
    assert 0 <= result.pgd_accuracy_on_autoattack_points <= 1  # PGD on the same 16 points, to compare with
    # the points an audited certificate proves robust at their label count as robust without being attacked
    certificates = read_certificates(tmp_path / "certificates.csv", experiment.eval_epsilon)
    labels = DataOptions().load(experiment, "test").labels[:16]
    proven = torch.zeros(16, dtype=torch.bool)
    for certificate in certificates:
        proven |= certificate.certified[:16] & (certificate.predictions[:16] == labels)
    assert result.autoattack_proven_not_attacked == int(proven.sum()) > 0
    assert result.autoattack_accuracy >= float(proven.double().mean())
    everything = attack_experiment(
        experiment, tmp_path, DataOptions(), cpu, pgd, progress=False, autoattack={**options, "attack_certified": True}
    )
    assert everything.autoattack_proven_not_attacked == 0
    assert everything.autoattack_accuracy >= float(proven.double().mean())  # the certificates hold under it too


def test_the_cpu_provenance_names_the_kernels_instruction_set_and_the_thread_count():
    """Trained nets differ with either, so every run's provenance and Table 1's caption must say both."""
    threads = torch.get_num_threads()
    try:
        for count, words in ((1, "1 thread"), (2, "2 threads")):
            torch.set_num_threads(count)
            name = cpu_name()
            assert name.endswith(f", {torch.backends.cpu.get_cpu_capability()}, {words}"), name
    finally:
        torch.set_num_threads(threads)
