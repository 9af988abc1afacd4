"""What each stage writes to its run folder, as typed records: the contract between the stages and the report.

A record writes itself as its stage's JSON file (`write`) and reads one back (`read`), checking that every key
without a default is there: a file left by an interrupted run, an older gloro-bench or a hand edit gets an
error that names it and the stage to rerun, not a KeyError deep in the report. Keys a record does not know are
ignored, so that a report can read run folders that a newer stage wrote. Optional keys default to None: run
folders written before they were recorded lack them, and the tables print those cells empty.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from gloro.atomic import write_json

OMITTED_WHILE_NONE = {"omit_none": True}  # a key the file holds only where the stage measured it


class StageResultError(ValueError):
    """A stage's result file is missing, unreadable or lacks keys the report needs."""


def _key(item) -> str:
    return item.metadata.get("key", item.name)


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """One stage's result; subclasses name their `stage` (the pipeline rule that writes it)."""

    stage: ClassVar[str] = "its"

    def to_json(self) -> dict[str, Any]:
        """The record as its JSON file holds it (a field marked `omit_none` is left out while None)."""
        data = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if not (value is None and item.metadata.get("omit_none")):
                data[_key(item)] = value
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "a stage result") -> Self:
        """The record of `data` (a parsed JSON object); `source` names it in errors."""
        if not isinstance(data, Mapping):
            raise StageResultError(f"{source} holds a JSON {type(data).__name__}, not the {cls.stage} stage's result")
        required = [_key(f) for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [key for key in required if key not in data]
        if missing:
            raise StageResultError(
                f"{source} lacks {', '.join(missing)}: it was left by an interrupted run, an older gloro-bench or an "
                f"edit; rerun the {cls.stage} stage (snakemake --forcerun {cls.stage}, or delete the file)"
            )
        return cls(**{item.name: data[_key(item)] for item in fields(cls) if _key(item) in data})

    @classmethod
    def read(cls, path: str | os.PathLike) -> Self:
        """The record in the JSON file at `path`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StageResultError(f"no {cls.stage} result at {path}: run the {cls.stage} stage first") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StageResultError(
                f"{path} is not a JSON file ({error}); rerun the {cls.stage} stage (snakemake --forcerun {cls.stage})"
            ) from error
        return cls.from_json(data, str(path))

    def write(self, path: str | os.PathLike) -> Path:
        """Write the record to `path` atomically."""
        return write_json(path, self.to_json())


@dataclass(frozen=True, kw_only=True)
class EvaluatedAt:
    """Mixed into the evaluation stages' records: the ε they ran at, where it came from ('config'), and the
    checkpoint's own where it differs (written only then)."""

    eval_epsilon: float | None = None
    eval_epsilon_from: str | None = None
    checkpoint_eval_epsilon: float | None = field(default=None, metadata=OMITTED_WHILE_NONE)


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    """train.json: the experiment's config, the method and its recipe, the training data's provenance, the
    machine, the cost, a warm-up's cost and the best-on-test epoch (reported apart, never as the result)."""

    stage: ClassVar[str] = "train"
    experiment: dict
    method: dict
    data: dict
    provenance: dict
    cost: dict
    train_seconds: float | None = None
    epochs: int | None = None
    final_train_loss: float | None = None
    warmup: dict | None = None
    best_on_test: dict | None = None


@dataclass(frozen=True, kw_only=True)
class CertifyResult(EvaluatedAt, StageResult):
    """certify.json: the first certifier's clean accuracy, VRA and time per point, every certifier's row
    (`certificates`), and the global certificate's full report (`global_report`, the file's "global")."""

    stage: ClassVar[str] = "certify"
    certifier: str
    epsilon: float
    num_examples: int
    clean_accuracy: float
    vra: float
    rejection_rate: float
    sec_per_point: float
    certificates: list
    global_report: dict = field(metadata={"key": "global"})
    freeze_seconds: float | None = None
    test_data: dict | None = None


@dataclass(frozen=True, kw_only=True)
class AttackResult(EvaluatedAt, StageResult):
    """attack.json: PGD's accuracy and settings, each certifier's soundness audit (`audit`: the first
    certifier's), how far below the certified radii a planted certificate would be caught, AutoAttack's accuracy
    where it ran, and the seconds each part took."""

    stage: ClassVar[str] = "attack"
    pgd_accuracy: float
    attack_settings: dict
    audit: dict | None
    audits: dict
    seconds: dict | None = None
    audit_sensitivity: dict | None = None
    # AutoAttack's keys are in the file only where it ran
    autoattack_accuracy: float | None = field(default=None, metadata=OMITTED_WHILE_NONE)
    autoattack_points: int | None = field(default=None, metadata=OMITTED_WHILE_NONE)
    autoattack_proven_not_attacked: int | None = field(default=None, metadata=OMITTED_WHILE_NONE)
    pgd_accuracy_on_autoattack_points: float | None = field(default=None, metadata=OMITTED_WHILE_NONE)
    autoattack_settings: dict | None = field(default=None, metadata=OMITTED_WHILE_NONE)


@dataclass(frozen=True, kw_only=True)
class StepCostResult(StageResult):
    """steps.json: the trained net's training step timed past the noise (`gloro.step_cost.steady_cost`), in
    seconds per epoch with the rounds' range, and the reference experiment's beside it where one was timed."""

    stage: ClassVar[str] = "time_steps"
    experiment: str
    seconds_per_epoch: float
    seconds_per_epoch_min: float
    seconds_per_epoch_max: float
    provenance: dict
    seconds_per_image: list | None = None
    batches_per_round: int | None = None
    passes_per_round: int | None = None
    batch_size: int | None = None
    rounds: int | None = None
    round_seconds: float | None = None
    # in the file only where a reference experiment was timed beside this one
    reference: dict | None = field(default=None, metadata=OMITTED_WHILE_NONE)


@dataclass(frozen=True, kw_only=True)
class BoundsResult(EvaluatedAt, StageResult):
    """bounds.json: the certifiers compared on the same first test points (the global one first), those left
    out with the reason, the global bound's tightness, and the seconds each part took."""

    stage: ClassVar[str] = "bounds"
    certifiers: list
    tightness: dict
    unsupported: dict = field(default_factory=dict)
    seconds: dict | None = None
