"""One named experiment of a config (data set, architecture, loss, ε, schedules, ...) and how to run its stages.

The pipeline's rule scripts are a few lines around `train_experiment`, `certify_experiment` and
`attack_experiment`; each writes its outputs atomically into the experiment's run folder.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from gloro.architectures import canonical_name, create_model
from gloro.atomic import atomic_path, write_json
from gloro.attack import AUTOATTACK_SQUARE_QUERIES, AUTOATTACK_STEPS, autoattack_accuracy, pgd_accuracy
from gloro.audit import audit_sensitivity, audit_soundness
from gloro.certify import Certificate, create_certifier, list_certifiers
from gloro.certify.compare import compare_certifiers
from gloro.checkpoint import load, save
from gloro.data import Split, Subset, load_dataset
from gloro.evaluate import certification_report, certify_all
from gloro.gloro_net import GloroNet
from gloro.methods import COST_REFERENCE, get_method, methods
from gloro.methods.options import option_names, options_to_config
from gloro.run_files import AttackFiles, BoundsFiles, CertifyFiles, StepCostFiles, TrainFiles, stage_files
from gloro.schedules import SCHEDULES, schedule_from_config, schedule_to_config
from gloro.step_cost import steady_cost
from gloro.tightness import global_tightness
from gloro.train import TrainingRecipe, finished_epochs, train


@dataclass(frozen=True)
class Experiment:
    """A named experiment; fields and defaults mirror workflow/schemas/config.schema.yaml."""

    name: str
    dataset: str
    architecture: str
    train_epsilon: float | dict
    eval_epsilon: float
    epochs: int
    activation: str = "relu"
    init: str = "glorot_uniform"
    method: str = "gloro"
    loss: str | None = None  # the method's default loss (gloro for GloRo)
    options: dict = field(default_factory=dict)  # the method's own settings (its options_class), by name
    warmup_epochs: int = 0
    batch_size: int = 256
    learning_rate: float | dict = 1e-3
    power_iterations: int = 10
    augmentation: str = "none"
    seed: int = 0
    when_available: bool = False
    subset: dict = field(default_factory=dict)
    certifiers: tuple[str, ...] | None = None
    eval_points: int | None = None
    eval_every: int = 1
    not_run: str | None = None  # planned but not runnable, with the reason (Table 1 shows it)
    optimizer: dict | None = None  # {kind: adam | sgd, momentum, weight_decay, clip_grad_norm}; default Adam

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "architecture", canonical_name(self.architecture))
        except ValueError as error:
            raise ValueError(f"experiment {self.name!r}: {error}") from error
        method = get_method(self.method)
        if self.loss is None:
            object.__setattr__(self, "loss", method.losses[0])
        if self.loss not in method.losses:
            raise ValueError(
                f"experiment {self.name!r}: method {self.method!r} trains with loss {' or '.join(method.losses)}, "
                f"not {self.loss!r}"
            )
        try:
            method.make_options(self.options)
        except ValueError as error:
            owners = [name for name in methods() if set(self.options or {}) & set(option_names(get_method(name)))]
            elsewhere = f" (options of {', '.join(owners)})" if owners and self.method not in owners else ""
            raise ValueError(f"experiment {self.name!r}: {error}{elsewhere}") from error
        certifiers = (method.certifier,) if self.certifiers is None else tuple(self.certifiers)
        known = list_certifiers()
        if unknown := [name for name in certifiers if name not in known]:
            raise ValueError(f"experiment {self.name!r}: unknown certifiers {unknown}; known: {', '.join(known)}")
        if not certifiers or certifiers[0] != method.certifier:
            raise ValueError(
                f"experiment {self.name!r}: the first certifier is the one its results are reported with and must be "
                f"{method.certifier!r} for method {self.method!r}, got {list(certifiers)}"
            )
        object.__setattr__(self, "certifiers", certifiers)
        if not (isinstance(self.eval_every, int) and self.eval_every >= 1):
            every = self.eval_every
            raise ValueError(f"experiment {self.name!r}: eval_every must be a whole number >= 1, got {every!r}")
        self.recipe()  # every schedule is checked when the config is read, not when a job starts

    @property
    def label(self) -> str:
        """The method as tables print it (GloRo, GloRo-T, KW, BCP)."""
        return get_method(self.method).label(self.loss)

    @classmethod
    def from_config(cls, name: str, settings: Mapping) -> Experiment:
        """Build from a config entry; an unknown or missing key raises naming it."""
        known = {f.name for f in fields(cls)} - {"name"}
        if unknown := set(settings) - known:
            method = get_method(settings.get("method", "gloro"))
            hint = f"; a method's own settings go under options: ({method.name}'s: {', '.join(option_names(method))})"
            raise ValueError(
                f"experiment {name!r}: unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
                + (hint if option_names(method) else "")
            )
        try:
            return cls(name=name, **{key: value for key, value in settings.items() if value is not None})
        except TypeError as error:
            raise ValueError(f"experiment {name!r}: {error}") from error

    def recipe(self) -> TrainingRecipe:
        """The training recipe, with every schedule built (and checked) from its config form."""
        return TrainingRecipe(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=schedule_from_config(self.learning_rate),
            epsilon=schedule_from_config(self.train_epsilon),
            loss=self.loss,
            options=get_method(self.method).make_options(self.options),
            augmentation=self.augmentation,
            seed=self.seed,
            adam_epsilon=get_method(self.method).adam_epsilon,
            **optimizer_settings(self.name, self.optimizer),
        )

    def subset_for(self, split: str) -> Subset | None:
        size = self.subset.get(split)
        return None if size is None else Subset(int(size), self.subset.get("seed"))


@dataclass(frozen=True)
class DataOptions:
    """Where data sets are looked for and cached, whether a download is allowed, and whether files that
    differ from the official release are refused (`strict`, the default) or read with a warning."""

    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = False
    strict: bool = True

    def load(self, experiment: Experiment, split: str, progress: bool = False) -> Split:
        return load_dataset(
            experiment.dataset,
            split,
            data_dir=self.data_dir,
            cache_dir=self.cache_dir,
            download=self.download,
            strict=self.strict,
            subset=experiment.subset_for(split),
            progress=progress,
        )


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is present, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def provenance(device: torch.device) -> dict:
    """Git commit, torch version and device name, recorded beside every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"git_commit": commit, "torch_version": str(torch.__version__), "device": str(device), "device_name": name}


def cpu_name() -> str:
    """The processor's model name, the instruction set of PyTorch's kernels and the threads it uses, e.g.
    'AMD EPYC 7B13, AVX512, 2 threads': float32 sums run in an order set by all three, so trained nets differ."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as stream:
            model = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), model)
    except OSError:
        pass
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model or 'unknown CPU'}, {capability}, {threads} thread{'' if threads == 1 else 's'}"


def optimizer_settings(name: str, spec: Mapping | None) -> dict:
    """TrainingRecipe's optimizer fields from an experiment's `optimizer` entry (None: Adam, no decay)."""
    spec = dict(spec or {})
    kind = spec.pop("kind", "adam")
    known = {"momentum", "weight_decay", "clip_grad_norm"}
    if unknown := set(spec) - known:
        raise ValueError(f"experiment {name!r}: unknown optimizer settings {sorted(unknown)}; known: {sorted(known)}")
    return {"optimizer": kind, **spec}


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


def cost_reference(name: str, experiments: Mapping[str, Mapping]) -> str | None:
    """The experiment whose training time Table 1 divides by this one's (`COST_REFERENCE`, GloRo, on the same
    data set, architecture and ε, run in this config; the first by name), or None: none, or this is one."""
    this = Experiment.from_config(name, experiments[name])
    if this.label == COST_REFERENCE:
        return None
    for other, settings in sorted(experiments.items()):
        candidate = Experiment.from_config(other, settings)
        same = (candidate.dataset, candidate.architecture, round(float(candidate.eval_epsilon), 3)) == (
            this.dataset,
            this.architecture,
            round(float(this.eval_epsilon), 3),
        )
        if same and candidate.label == COST_REFERENCE and not candidate.not_run:
            return other
    return None


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
    rows = compare_certifiers(net, images, labels, net.eval_epsilon, names)
    seconds = {"tightness": middle - start, "certifiers": time.perf_counter() - middle}
    result = {"certifiers": rows, "tightness": tightness, **epsilon_record, "seconds": seconds}
    write_json(files.report, result)
    return result
