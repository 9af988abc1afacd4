"""The figures of results/ (PDF and PNG): VRA by radius, training curves, epoch cost, tightness."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from gloro.atomic import atomic_path
from gloro.bench.results import BoundsResult
from gloro.bench.run_files import RunReports


def save_figure(figure, stem: Path) -> None:
    """Save as PDF and PNG, each atomically."""
    import matplotlib.pyplot as plt

    for suffix in (".pdf", ".png"):
        target = stem.with_suffix(suffix)
        with atomic_path(target) as temporary:
            figure.savefig(temporary, format=suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(figure)


def plot_vra_by_radius(table: pd.DataFrame, stem: Path, published: pd.DataFrame | None = None) -> None:
    """VRA against the certified radius, one line per experiment (distinct markers for grayscale); where
    Table 1 has a published VRA for an experiment (`published`: experiment, epsilon, vra_reported in %),
    a hollow marker of the same colour at its ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reported = {} if published is None else {
        row["experiment"]: (row["epsilon"], row["vra_reported"] / 100)
        for _, row in published.iterrows()
        if not pd.isna(row["vra_reported"])
    }  # fmt: skip
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for (name, group), marker in zip(table.groupby("experiment"), "os^vDP*X", strict=False):
        (line,) = axis.plot(group["radius"], group["vra"], marker=marker, label=name)
        if name in reported:
            epsilon, vra = reported[name]
            axis.plot([epsilon], [vra], marker=marker, markersize=11, fillstyle="none", color=line.get_color(),
                      linestyle="none", label=f"{name}, published")  # fmt: skip
    axis.set_xlabel("radius ε (ℓ2, pixels in [0, 1])")
    axis.set_ylabel("verified-robust accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_figure(figure, stem)


def plot_training_curves(
    history: pd.DataFrame, stem: Path, best_epochs: Mapping[str, int | None] | None = None
) -> None:
    """Per epoch, one line per experiment: training loss, accuracy and VRA on the training batches, clean
    accuracy and VRA on the test points certified after each epoch, and train ε; a star marks the epoch of
    each run's best-on-test checkpoint (`best_epochs`: experiment → epoch, counted from 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "training loss"),
        ("clean_accuracy", "clean accuracy, training batches"),
        ("vra", "VRA at train ε, training batches"),
        ("epsilon", "train ε"),
        ("eval_clean_accuracy", "clean accuracy, test"),
        ("eval_vra", "VRA at eval ε, test"),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5), layout="constrained")
    for axis, (column, label) in zip(axes.flat, panels, strict=True):
        for name, group in history.groupby("experiment"):
            if column not in group or group[column].isna().all():
                continue
            group = group.dropna(subset=[column])  # a run evaluated every k epochs: join the epochs it has
            (line,) = axis.plot(group["epoch"] + 1, group[column], label=name)
            best = (best_epochs or {}).get(name)
            if column == "eval_vra" and best is not None and not pd.isna(best):
                at = group[group["epoch"] == best]
                axis.plot(at["epoch"] + 1, at[column], marker="*", markersize=12, color=line.get_color(),
                          linestyle="none")  # fmt: skip
        axis.set_xlabel("epoch")
        axis.set_title(label, fontsize=10)
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    (star,) = axes.flat[5].plot([], [], marker="*", color="gray", linestyle="none", label="best-on-test checkpoint")
    axes.flat[5].legend(handles=[star], fontsize=7)
    save_figure(figure, stem)


def plot_epoch_cost(history: pd.DataFrame, stem: Path) -> None:
    """Seconds and peak memory per epoch, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    for name, group in history.groupby("experiment"):
        axes[0].plot(group["epoch"] + 1, group["seconds"], label=name)
        axes[1].plot(group["epoch"] + 1, group["peak_mem_mb"], label=name)
    axes[0].set_ylabel("seconds per epoch")
    axes[1].set_ylabel("peak memory (MB)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(figure, stem)


def plot_tightness(reports: Mapping[str, RunReports], stem: Path) -> None:
    """Sound margin Lipschitz bound over the empirical lower bound: tightest and median class pair per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, tightest, median = [], [], []
    for name, files in reports.items():
        tightness = BoundsResult.read(files.bounds).tightness
        names.append(name)
        tightest.append(tightness["min_sound_over_lower"])
        median.append(tightness["median_sound_over_lower"])
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], tightest, width=0.4, color="0.3", label="tightest pair")
    axis.bar([p + 0.2 for p in positions], median, width=0.4, color="0.7", hatch="//", label="median pair")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(list(positions), names, rotation=20, ha="right", fontsize=7)
    axis.set_ylabel("sound bound / lower bound")
    axis.legend(fontsize=7)
    save_figure(figure, stem)
