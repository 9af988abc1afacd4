"""The certify stage: the test split certified with each of the experiment's certifiers, and read back."""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.results import CertifyResult
from gloro.bench.run_files import CertifyFiles, stage_files
from gloro.bench.stages.loading import load_for_evaluation, write_csv
from gloro.certify import Certificate, create_certifier
from gloro.evaluation import certification_report


def certify_experiment(
    experiment: Experiment,
    files: CertifyFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    radii: list[float],
    batch_size: int,
) -> CertifyResult:
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
    result = CertifyResult(
        certifier=primary["certifier"],
        epsilon=epsilon,
        num_examples=len(labels),
        clean_accuracy=primary["clean_accuracy"],
        vra=primary["vra"],
        rejection_rate=1 - primary["certified_rate"],
        sec_per_point=primary["sec_per_point"],
        certificates=rows,
        **epsilon_record,
        global_report=report.metrics,
        freeze_seconds=freeze_seconds,
        test_data=test_split.metadata(),
    )
    radius = torch.where(report.correct, report.radius, torch.zeros_like(report.radius))
    write_csv(files.radii, [{"radius": float(r)} for r in radius.tolist()])
    write_csv(files.certificates, [row for c in certificates for row in c.point_rows()])
    result.write(files.report)
    return result


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
