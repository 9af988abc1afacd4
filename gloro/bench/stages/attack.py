"""The attack stage: PGD (and AutoAttack) accuracy, and the soundness audit of every certificate."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import torch

from gloro.adversaries import AUTOATTACK_SQUARE_QUERIES, AUTOATTACK_STEPS
from gloro.atomic import write_json
from gloro.attack import autoattack_accuracy, pgd_accuracy
from gloro.audit import audit_sensitivity, audit_soundness
from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.results import AttackResult
from gloro.bench.run_files import AttackFiles, stage_files
from gloro.bench.stages.certify import read_certificates
from gloro.bench.stages.loading import load_for_evaluation
from gloro.certify import Certificate
from gloro.evaluation import certify_all


def attack_experiment(
    experiment: Experiment,
    files: AttackFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    pgd: Mapping,
    progress: bool = True,
    autoattack: Mapping | None = None,
    batch_size: int = 256,
) -> AttackResult:
    """PGD accuracy at the eval ε on the test split, a soundness audit of every point that any of the
    experiment's certifiers certified (read from `certificates.csv`), which reuses the PGD examples of points
    whose label is their prediction and attacks only the rest, and optionally ℓ2 AutoAttack's accuracy
    (`autoattack`: enabled, points, steps, square_queries, attack_certified), which counts the points an
    audited certificate proves robust without attacking them unless `attack_certified`. Every attack takes
    `batch_size` points at a time; `progress` shows each advance in the job's log (each takes minutes at the
    paper's settings), and `seconds` in the result says how long each part took. The audit's record goes to
    `files.violations`: "none" once every audit passed, else the broken points of the failing certifier."""
    files = stage_files(AttackFiles, files)
    test_split = data.load(experiment, "test")
    net, epsilon_record = load_for_evaluation(experiment, files.model, device)
    net.freeze()
    images, labels = test_split.float_images(), test_split.labels
    options = {"steps": pgd["steps"], "step_size": pgd["step_size"], "restarts": pgd["restarts"]}
    attack = pgd_accuracy(
        net.model,
        images,
        labels,
        net.eval_epsilon,
        seed=experiment.seed,
        batch_size=batch_size,
        progress=progress,
        **options,
    )
    result = {
        "pgd_accuracy": attack.metrics["robust_accuracy"],
        "attack_settings": attack.metrics["settings"],
        **epsilon_record,
        "seconds": {"pgd": attack.metrics["seconds"]},  # where the stage's time goes, part by part
    }
    certificates = read_certificates(files.certificates, net.eval_epsilon)
    # the global radii (the certify stage's, else computed): how far below them would a plant be caught?
    reference = next((c for c in certificates if c.method == "global"), None) or certify_all(net, images)
    flipped = attack.adversarial_predictions.cpu() != reference.predictions
    result["audit_sensitivity"] = audit_sensitivity(reference.radius, flipped, net.eval_epsilon)
    AttackResult(**result, audit=None, audits={}).write(files.report)  # what is known should the audit fail
    files.violations.unlink(missing_ok=True)  # a previous run's record says nothing of this one
    audits = {}
    for certificate in certificates:
        print(f"auditing the {int(certificate.certified.sum())} points {certificate.method} certified", file=sys.stderr)
        audits[certificate.method] = audit_soundness(
            net,
            images,
            attack="pgd",
            certificate=certificate,
            earlier=attack,  # PGD above was this audit's attack on every certified point it classifies right
            violations_path=files.violations,
            seed=experiment.seed + 1,
            batch_size=batch_size,
            progress=progress,
            **options,
        )  # raises SoundnessError, naming the file of offending indices, if any certified point breaks
    result["audit"] = audits[experiment.certifiers[0]]
    result["audits"] = audits
    result["seconds"]["audits"] = sum(audit["seconds"] for audit in audits.values())
    write_json(files.violations, {"violations": "none", "audited_certifiers": list(audits)})
    if autoattack and autoattack.get("enabled"):
        points = min(autoattack.get("points") or len(labels), len(labels))
        # after the audits: the points their certificates prove robust need no attack unless the config asks
        proven = None if autoattack.get("attack_certified") else proven_robust(certificates, labels)[:points]
        strongest = autoattack_accuracy(
            net.model,
            images[:points],
            labels[:points],
            net.eval_epsilon,
            steps=autoattack.get("steps", AUTOATTACK_STEPS),
            square_queries=autoattack.get("square_queries", AUTOATTACK_SQUARE_QUERIES),
            seed=experiment.seed,
            batch_size=batch_size,
            progress=progress,
            proven=proven,
        )
        result["autoattack_accuracy"] = strongest.metrics["robust_accuracy"]
        result["autoattack_points"] = points
        result["autoattack_proven_not_attacked"] = strongest.metrics["proven_not_attacked"]
        # AutoAttack may cover only the first points: PGD's accuracy on those same points, to compare with
        result["pgd_accuracy_on_autoattack_points"] = float(attack.robust[:points].double().mean())
        result["autoattack_settings"] = strongest.metrics["settings"]
        result["seconds"]["autoattack"] = strongest.metrics["seconds"]
    record = AttackResult(**result)
    record.write(files.report)
    return record


def proven_robust(certificates: Sequence[Certificate], labels: torch.Tensor) -> torch.Tensor:
    """Per point: whether some certificate certifies it with its label as the prediction."""
    proven = torch.zeros(len(labels), dtype=torch.bool)
    for certificate in certificates:
        proven |= certificate.certified.cpu() & (certificate.predictions.cpu() == labels.cpu())
    return proven
