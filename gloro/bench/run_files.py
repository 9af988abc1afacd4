"""Where each stage of an experiment reads and writes. The pipeline passes the paths its rules declare; a
script of your own can give a folder instead, which means the standard names in it (`in_folder`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar


@dataclass(frozen=True)
class StageFiles:
    """Paths of one stage; subclasses name them and their standard file names."""

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        raise NotImplementedError

    @classmethod
    def in_folder(cls, folder: str | os.PathLike):
        """The stage's files under their standard names in `folder` (what the pipeline's rules declare)."""
        return cls(**{name: Path(folder) / file for name, file in cls.standard_names().items()})

    def __post_init__(self) -> None:
        for field in fields(self):
            object.__setattr__(self, field.name, Path(getattr(self, field.name)))


@dataclass(frozen=True)
class TrainFiles(StageFiles):
    model: Path  # the final checkpoint, which every reported number comes from
    best_model: Path  # the best-on-test epoch's checkpoint, kept apart
    history: Path
    summary: Path  # train.json
    scratch: Path  # rewritten after every epoch, removed at the end: a killed job resumes from it
    warmup: Path  # the warm-up's record, for a resumed job

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        return {
            "model": "model.pt",
            "best_model": "model_best_on_test.pt",
            "history": "history.csv",
            "summary": "train.json",
            "scratch": "scratch.pt",
            "warmup": "warmup.json",
        }


@dataclass(frozen=True)
class CertifyFiles(StageFiles):
    model: Path
    report: Path  # certify.json
    radii: Path
    certificates: Path

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        return {"model": "model.pt", "report": "certify.json", "radii": "radii.csv", "certificates": "certificates.csv"}


@dataclass(frozen=True)
class AttackFiles(StageFiles):
    model: Path
    certificates: Path  # the certify stage's, audited here
    report: Path  # attack.json
    violations: Path  # the audit's record: "none", or the broken points of the certifier that failed

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        return {
            "model": "model.pt",
            "certificates": "certificates.csv",
            "report": "attack.json",
            "violations": "violations.json",
        }


@dataclass(frozen=True)
class BoundsFiles(StageFiles):
    model: Path
    report: Path  # bounds.json

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        return {"model": "model.pt", "report": "bounds.json"}


@dataclass(frozen=True)
class StepCostFiles(StageFiles):
    model: Path
    report: Path  # steps.json

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        return {"model": "model.pt", "report": "steps.json"}


@dataclass(frozen=True)
class RunReports(StageFiles):
    """What the report reads of one experiment: every stage's summary and the training history."""

    train: Path
    history: Path
    certify: Path
    attack: Path
    bounds: Path
    steps: Path

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        names = {"train": "train.json", "history": "history.csv", "certify": "certify.json"}
        return {**names, "attack": "attack.json", "bounds": "bounds.json", "steps": "steps.json"}


Files = TypeVar("Files", bound=StageFiles)


def stage_files(kind: type[Files], where: Files | str | os.PathLike) -> Files:
    """`where` itself when it is already `kind`'s paths, else `kind`'s standard files in the folder `where`."""
    return where if isinstance(where, kind) else kind.in_folder(where)


@dataclass(frozen=True)
class ReportFiles(StageFiles):
    """Every table and figure the report writes; each figure is a PNG and a PDF of the same stem."""

    runs: Path
    vra_by_radius: Path
    table1: Path
    table1_md: Path
    table1_tex: Path
    cost: Path
    cost_md: Path
    comparison: Path
    comparison_md: Path
    vra_png: Path
    vra_pdf: Path
    curves_png: Path
    curves_pdf: Path
    epoch_cost_png: Path
    epoch_cost_pdf: Path
    tightness_png: Path
    tightness_pdf: Path

    @classmethod
    def standard_names(cls) -> dict[str, str]:
        tables = {
            "runs": "runs.csv",
            "vra_by_radius": "vra_by_radius.csv",
            "table1": "table1.csv",
            "table1_md": "table1.md",
            "table1_tex": "table1.tex",
            "cost": "certification_cost.csv",
            "cost_md": "certification_cost.md",
            "comparison": "certifier_comparison.csv",
            "comparison_md": "certifier_comparison.md",
        }
        stems = {
            "vra": "vra_by_radius",
            "curves": "training_curves",
            "epoch_cost": "epoch_cost",
            "tightness": "tightness",
        }
        figures = {f"{key}_{kind}": f"{stem}.{kind}" for key, stem in stems.items() for kind in ("png", "pdf")}
        return {**{k: f"tables/{v}" for k, v in tables.items()}, **{k: f"figures/{v}" for k, v in figures.items()}}

    def figure_stem(self, key: str) -> Path:
        """The path without suffix that a figure's PNG and PDF share (`key`: vra, curves, epoch_cost, tightness)."""
        png, pdf = getattr(self, f"{key}_png"), getattr(self, f"{key}_pdf")
        if png.with_suffix("") != pdf.with_suffix(""):
            raise ValueError(f"a figure's PNG and PDF must share a name: got {png} and {pdf}")
        return png.with_suffix("")
