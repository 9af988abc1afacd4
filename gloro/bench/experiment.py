"""One named experiment of a config (data set, architecture, method and its options, ε, schedules, ...),
checked when the config is read, and the recipe and data it trains with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from gloro.architectures import canonical_name
from gloro.certify import list_certifiers
from gloro.data import Split, Subset, dataset_spec, load_dataset
from gloro.methods import COST_REFERENCE, get_method, list_methods
from gloro.methods.options import option_names
from gloro.schedules import schedule_from_config
from gloro.training import TrainingRecipe


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
            dataset_spec(self.dataset)
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
            owners = [name for name in list_methods() if set(self.options or {}) & set(option_names(get_method(name)))]
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


def optimizer_settings(name: str, spec: Mapping | None) -> dict:
    """TrainingRecipe's optimizer fields from an experiment's `optimizer` entry (None: Adam, no decay)."""
    spec = dict(spec or {})
    kind = spec.pop("kind", "adam")
    known = {"momentum", "weight_decay", "clip_grad_norm"}
    if unknown := set(spec) - known:
        raise ValueError(f"experiment {name!r}: unknown optimizer settings {sorted(unknown)}; known: {sorted(known)}")
    return {"optimizer": kind, **spec}


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
