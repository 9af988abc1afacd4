"""One experiment's run folder read into its row of runs.csv (every number the tables print) and its history."""

from __future__ import annotations

import json

import pandas as pd

from gloro.bench.results import AttackResult, CertifyResult, StepCostResult, TrainResult
from gloro.bench.run_files import RunReports
from gloro.methods import get_method


def read_run(files: RunReports) -> tuple[dict, pd.DataFrame]:
    """One experiment's row of runs.csv and its per-epoch history."""
    train, certify, attack = (
        TrainResult.read(files.train),
        CertifyResult.read(files.certify),
        AttackResult.read(files.attack),
    )
    history = pd.read_csv(files.history)
    experiment, cost, best = train.experiment, train.cost, train.best_on_test or {}
    steps = StepCostResult.read(files.steps) if files.steps.is_file() else None  # older run folders lack it
    reference = (steps and steps.reference) or {}
    training_epoch = cost.get("later_epochs_median_seconds") or cost["later_epochs_mean_seconds"]
    audit, audits, certified = attack.audit, attack.audits, certify.global_report
    method = get_method(experiment["method"])
    row = {
        "experiment": experiment["name"],
        "dataset": experiment["dataset"],
        "architecture": experiment["architecture"],
        "activation": experiment["activation"],
        "method": method.label(experiment["loss"]),
        "certifier": certify.certifier,
        "train_epsilon": json.dumps(experiment["train_epsilon"]),
        "eval_epsilon": experiment["eval_epsilon"],
        "epochs": experiment["epochs"],
        "batch_size": experiment["batch_size"],
        "power_iterations": experiment["power_iterations"],
        "augmentation": experiment["augmentation"],
        "seed": experiment["seed"],
        "subset": json.dumps(experiment["subset"]),
        "clean_accuracy": certify.clean_accuracy,
        "vra": certify.vra,
        "rejection_rate": certify.rejection_rate,
        "pgd_accuracy": attack.pgd_accuracy,
        "autoattack_accuracy": attack.autoattack_accuracy,
        "autoattack_points": attack.autoattack_points,
        "autoattack_proven_not_attacked": attack.autoattack_proven_not_attacked,
        "pgd_accuracy_on_autoattack_points": attack.pgd_accuracy_on_autoattack_points,
        "test_examples": certify.num_examples,
        "cert_sec_per_point": certify.sec_per_point,
        "audited_points": audit["certified"],
        "soundness_violations": sum(a["violations"] for a in audits.values()),
        "audited_certifiers": ",".join(audits),
        "best_on_test_epoch": best.get("epoch"),
        "best_on_test_vra": best.get("vra"),
        "best_on_test_clean_accuracy": best.get("clean_accuracy"),
        "first_epoch_sec": cost["first_epoch_seconds"],
        # the training step timed past the noise (steps.json); where a run folder lacks it, training's median
        # later epoch (older runs: the mean)
        "sec_per_epoch": (steps and steps.seconds_per_epoch) or training_epoch or cost["first_epoch_seconds"],
        "sec_per_epoch_min": steps and steps.seconds_per_epoch_min,
        "sec_per_epoch_max": steps and steps.seconds_per_epoch_max,
        "sec_per_epoch_in_training": training_epoch,
        "time_ratio_reference": reference.get("experiment"),
        "reference_time_ratio": reference.get("time_ratio"),
        "reference_time_ratio_low": reference.get("time_ratio_low"),
        "reference_time_ratio_high": reference.get("time_ratio_high"),
        "train_examples": train.data["examples"],
        "train_images_per_second": cost["later_epochs_images_per_second"],
        "peak_mem_mb": cost["peak_mem_mb"],
        "peak_mem_source": cost["peak_mem_source"],
        "global_vra": certified["vra"],
        "global_vra_ignoring_rounding": certified.get("vra_ignoring_rounding"),
        "global_vra_box_allowance": certified.get("vra_box_allowance"),
        "global_vra_claimed": certified.get("vra_claimed"),
        "rounding_offset_max": certified.get("rounding_offset_max"),
        "lipschitz_power_iteration": certified["lipschitz_power_iteration"],
        "lipschitz_sound": certified["lipschitz_sound"],
        "lipschitz_sound_over_power": certified["lipschitz_ratio"],
        "forward_points_per_second": certified["forward_points_per_second"],
        "certify_points_per_second": certified["certify_points_per_second"],
        "certify_slowdown": certified.get("certify_slowdown"),  # median of the rounds' certify ÷ forward time
        "certify_slowdown_q1": certified.get("certify_slowdown_q1"),  # and its quartiles over the rounds
        "certify_slowdown_q3": certified.get("certify_slowdown_q3"),
        **{f"vra_{c['certifier']}": c["vra"] for c in certify.certificates},
        **{f"sec_per_point_{c['certifier']}": c["sec_per_point"] for c in certify.certificates},
        "method_settings": json.dumps(train.method["recipe"], sort_keys=True),
        **train.provenance,
        "train_data_checksums": json.dumps(train.data.get("sources", [])),
        "attack_settings": json.dumps(attack.attack_settings, sort_keys=True),
    }
    return row, history.assign(experiment=experiment["name"])
