"""How each stage of an experiment runs: train, time steps, certify, attack and audit, compare bounds.

The pipeline's rule scripts are a few lines around these functions; each writes its outputs atomically
into the experiment's run folder.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path

import torch

from gloro.adversaries import AUTOATTACK_SQUARE_QUERIES, AUTOATTACK_STEPS
from gloro.architectures import create_model
from gloro.atomic import atomic_path, write_json
from gloro.attack import autoattack_accuracy, pgd_accuracy
from gloro.audit import audit_sensitivity, audit_soundness
from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import provenance
from gloro.bench.run_files import AttackFiles, BoundsFiles, CertifyFiles, StepCostFiles, TrainFiles, stage_files
from gloro.certify import Certificate, create_certifier
from gloro.certify.compare import compare_supported
from gloro.checkpoint import load, save
from gloro.data import Split
from gloro.evaluation import certification_report, certify_all
from gloro.gloro_net import GloroNet
from gloro.history import finished_epochs
from gloro.methods.options import options_to_config
from gloro.schedules import SCHEDULES, schedule_to_config
from gloro.step_cost import steady_cost
from gloro.tightness import global_tightness
from gloro.training import TrainingRecipe, train


def recipe_settings(recipe: TrainingRecipe) -> dict:
    """The training recipe as JSON, schedules in their config form: recorded with every run's results."""
    settings = {}
    for item in fields(recipe):
        value = getattr(recipe, item.name)
        if item.name == "options":
            value = options_to_config(value)
        settings[item.name] = schedule_to_config(value) if isinstance(value, tuple(SCHEDULES.values())) else value
    return settings


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write dict rows as CSV atomically (columns from the first row)."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_experiment(
    experiment: Experiment,
    files: TrainFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    progress: bool = True,
) -> dict:
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
    summary = {
        "experiment": asdict(experiment),
        "method": {"name": experiment.method, "label": experiment.label, "recipe": recipe_settings(recipe)},
        "data": train_split.metadata(),
        "provenance": provenance(device),
        "train_seconds": seconds,
        "epochs": len(history),
        "final_train_loss": history[-1]["loss"],
        "cost": history.cost(),
        "warmup": warmup,
        # the paper's code kept the epoch with the best VRA on the *test* set: reported apart, labelled
        "best_on_test": None
        if best is None
        else {
            "epoch": best.epoch,
            "vra": best.vra,
            "clean_accuracy": best.clean_accuracy,
            "epsilon": best.epsilon,
        },
    }
    write_csv(files.history, list(history))
    write_json(files.summary, summary)
    scratch.unlink(missing_ok=True)
    warmup_file.unlink(missing_ok=True)
    return summary


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


def step_cost_experiment(
    experiment: Experiment,
    files: StepCostFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    reference: Experiment | None = None,
) -> dict:
    """Time the trained net's training step past the noise (`gloro.step_cost`: the seconds per epoch that Table 1
    prints), beside a fresh net of the `reference` experiment on the same batches and in the same rounds when
    one is given (its step costs the same whatever its weights; a baseline's does not, hence the trained net),
    and write the timings at `files`."""
    files = stage_files(StepCostFiles, files)
    train_split = data.load(experiment, "train")
    net, _ = load_for_evaluation(experiment, files.model, device)
    versus = None if reference is None else (reference.name, new_net(reference, train_split), reference.recipe())
    images, labels = train_split.float_images(), train_split.labels
    summary = {
        "experiment": experiment.name,
        **steady_cost(net, experiment.recipe(), images, labels, device=device, reference=versus),
        "provenance": provenance(device),
    }
    write_json(files.report, summary)
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


def load_for_evaluation(experiment: Experiment, model: Path, device: torch.device) -> tuple[GloroNet, dict]:
    """The trained net, evaluated at the config's eval ε rather than the one saved in its checkpoint (they
    differ when the config changed after training), and a record of both for the stage's result."""
    net = load(model, map_location=device)
    record = {"eval_epsilon": experiment.eval_epsilon, "eval_epsilon_from": "config"}
    if net.eval_epsilon != experiment.eval_epsilon:
        record["checkpoint_eval_epsilon"] = net.eval_epsilon
    net.eval_epsilon = experiment.eval_epsilon
    return net, record


def warn_if_claim_is_short(name: str, metrics: Mapping) -> None:
    """Say in the job's log where the Lipschitz constant training uses lies below the sound one: a VRA computed
    with it, as the method's own evaluation would, is not a certificate (Table 1 flags the row too)."""
    claimed, sound = metrics["lipschitz_power_iteration"], metrics["lipschitz_sound"]
    if claimed < sound:
        print(
            f"{name}: the Lipschitz constant its training uses, {claimed:.9g}, is {1 - claimed / sound:.3g} below the "
            f"sound bound of its weights, {sound:.9g}; with it the VRA would be {metrics['vra_claimed']:.4f} (no "
            f"rounding allowance), against {metrics['vra']:.4f} certified",
            file=sys.stderr,
        )


def certify_experiment(
    experiment: Experiment,
    files: CertifyFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    radii: list[float],
    batch_size: int,
) -> dict:
    """Freeze the trained net and certify the test split at the eval ε with each of the experiment's certifiers.

    Writes `certify.json` (the first certifier's clean accuracy, VRA and time per point, every certifier's
    row under `certificates`, and the global certificate's full report under `global`), `radii.csv` (the
    global certified radius of each correctly classified point, else 0) and `certificates.csv` (every
    certifier's per-point decision, which the attack stage audits).
    """
    files = stage_files(CertifyFiles, files)
    test_split = data.load(experiment, "test")
    images, labels = test_split.float_images(), test_split.labels
    net, epsilon_record = load_for_evaluation(experiment, files.model, device)
    start = time.perf_counter()
    net.freeze()
    freeze_seconds = time.perf_counter() - start
    epsilon = experiment.eval_epsilon
    report = certification_report(net, images, labels, epsilon, radii=radii, batch_size=batch_size)
    warn_if_claim_is_short(experiment.name, report.metrics)
    certificates = []
    for name in experiment.certifiers:  # the report above is the global certification: not run twice
        certificate = report.certificate() if name == "global" else create_certifier(name).timed(net, images, epsilon)
        print(f"{name}: VRA {certificate.vra(labels):.4f} in {certificate.seconds:.2f} s", file=sys.stderr)
        certificates.append(certificate)
    rows = [certificate.to_row(labels) for certificate in certificates]
    primary = rows[0]
    result = {
        "certifier": primary["certifier"],
        "epsilon": epsilon,
        "num_examples": len(labels),
        "clean_accuracy": primary["clean_accuracy"],
        "vra": primary["vra"],
        "rejection_rate": 1 - primary["certified_rate"],
        "sec_per_point": primary["sec_per_point"],
        "certificates": rows,
        **epsilon_record,
        "global": report.metrics,
        "freeze_seconds": freeze_seconds,
        "test_data": test_split.metadata(),
    }
    radius = torch.where(report.correct, report.radius, torch.zeros_like(report.radius))
    write_csv(files.radii, [{"radius": float(r)} for r in radius.tolist()])
    write_csv(files.certificates, [row for c in certificates for row in c.point_rows()])
    write_json(files.report, result)
    return result


def read_certificates(path: Path, epsilon: float) -> list[Certificate]:
    """The per-certifier decisions `certify_experiment` wrote to `certificates.csv`, in file order."""
    with Path(path).open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    names = list(dict.fromkeys(row["certifier"] for row in rows))
    certificates = []
    for name in names:
        mine = [row for row in rows if row["certifier"] == name]
        radius = (
            None
            if mine[0]["radius"] == ""
            else torch.tensor([float(row["radius"]) for row in mine], dtype=torch.float64)
        )
        certificates.append(
            Certificate(
                predictions=torch.tensor([int(row["prediction"]) for row in mine]),
                certified=torch.tensor([row["certified"] == "True" for row in mine]),
                radius=radius,
                epsilon=epsilon,
                method=name,
            )
        )
    return certificates


def proven_robust(certificates: Sequence[Certificate], labels: torch.Tensor) -> torch.Tensor:
    """Per point: whether some certificate certifies it with its label as the prediction."""
    proven = torch.zeros(len(labels), dtype=torch.bool)
    for certificate in certificates:
        proven |= certificate.certified.cpu() & (certificate.predictions.cpu() == labels.cpu())
    return proven


def attack_experiment(
    experiment: Experiment,
    files: AttackFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    pgd: Mapping,
    progress: bool = True,
    autoattack: Mapping | None = None,
    batch_size: int = 256,
) -> dict:
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
    write_json(files.report, {**result, "audit": None, "audits": {}})
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
    write_json(files.report, result)
    return result


def bounds_experiment(
    experiment: Experiment,
    files: BoundsFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    points: int,
    tightness_steps: int,
    tightness_pairs: int | None = None,
    certifiers: Sequence[str] = (),
) -> dict:
    """Certifiers compared on the first `points` test points, and the global bound's tightness.

    Writes `bounds.json`: under `certifiers`, one row per certifier (VRA, seconds per point, points certified
    beyond the global certificate) for the global certificate, which is the reference, the local Lipschitz
    bound, every one of `certifiers` and the experiment's own; under `tightness`, sound K_ij over an empirical
    lower bound (optimised input pairs started from those points).
    """
    files = stage_files(BoundsFiles, files)
    test_split = data.load(experiment, "test")
    net, epsilon_record = load_for_evaluation(experiment, files.model, device)
    net.freeze()
    images, labels = test_split.float_images()[:points], test_split.labels[:points]
    start = time.perf_counter()
    tightness = global_tightness(
        net, inputs=images, steps=tightness_steps, seed=experiment.seed, max_pairs=tightness_pairs
    )
    tightness.pop("pairs", None)
    middle = time.perf_counter()
    names = list(dict.fromkeys(["global", "local", *certifiers, *experiment.certifiers]))
    rows, unsupported = compare_supported(net, images, labels, net.eval_epsilon, names)
    for name, reason in unsupported.items():
        print(f"{experiment.name}: the {name} certifier is left out: {reason}", file=sys.stderr)
    seconds = {"tightness": middle - start, "certifiers": time.perf_counter() - middle}
    result = {"certifiers": rows, "unsupported": unsupported, "tightness": tightness, **epsilon_record}
    result["seconds"] = seconds
    write_json(files.report, result)
    return result
