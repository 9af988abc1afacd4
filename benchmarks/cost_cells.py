"""Do two runs print the same costs? Every cost cell of Table 1 and of the certification-cost table, run B
over run A, with the cells that moved beyond ±15% marked.

    python benchmarks/cost_cells.py RUN_A/tables RUN_B/tables

Each argument is a `results/tables` folder (copy the first away before the second `make run` replaces it).
A ratio that either run printed as 'unsteady' (its rounds spread beyond ±15%) counts as a cell the run
marked not measurable, as the table does; so does every absolute time or rate, which the tables mark † as
following the machine's load. Exits 1 when an unmarked ratio moved beyond ±15%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gloro.bench.views import UNSTEADY_HIGH, UNSTEADY_LOW

TABLE1_CELLS = ("sec_per_epoch", "peak_mem_mb", "cert_ms_per_point", "gloro_time_ratio", "gloro_mem_ratio")
COST_CELLS = (
    "sec_per_point_global",
    "sec_per_point_local",
    "local_over_global_time",
    "forward_points_per_second",
    "certify_points_per_second",
    "certify_over_forward_throughput",
)


# times and rates of the machine during a job: the tables mark them † (what moves them is the host's load)
ABSOLUTE_CELLS = (
    "sec_per_epoch",
    "cert_ms_per_point",
    "sec_per_point_global",
    "sec_per_point_local",
    "forward_points_per_second",
    "certify_points_per_second",
)
SPREAD_CELLS = ("gloro_time_ratio", "local_over_global_time", "certify_over_forward_throughput")


def unsteady(row: pd.Series, cell: str) -> bool:
    """Whether the table printed this row's ratio `cell` as 'unsteady' (its spread over rounds beyond ±15%)."""
    value, low, high = (row.get(f"{cell}{suffix}") for suffix in ("", "_low", "_high"))
    if any(v is None or pd.isna(v) for v in (value, low, high)):
        return False
    return low < UNSTEADY_LOW * value or high > UNSTEADY_HIGH * value


def compare(first: pd.DataFrame, second: pd.DataFrame, cells: tuple[str, ...], table: str) -> list[dict]:
    """One row per experiment and cell measured in both: the two values and their ratio."""
    rows = []
    second = second.set_index("experiment")
    for _, a in first.dropna(subset=["experiment"]).iterrows():
        if a["experiment"] not in second.index:
            continue
        b = second.loc[a["experiment"]]
        for cell in cells:
            if cell not in a or pd.isna(a[cell]) or pd.isna(b[cell]):
                continue
            ratio = float(b[cell]) / float(a[cell])
            marked = cell in SPREAD_CELLS and (unsteady(a, cell) or unsteady(b, cell))
            within = UNSTEADY_LOW <= ratio <= UNSTEADY_HIGH
            if within:
                verdict = "within ±15%"
            elif cell in ABSOLUTE_CELLS:
                verdict = "moved, marked †"
            else:
                verdict = "marked unsteady" if marked else "MOVED"
            row = {"table": table, "experiment": a["experiment"], "cell": cell, "A": a[cell], "B": b[cell]}
            rows.append(row | {"B ÷ A": round(ratio, 3), "verdict": verdict})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="run A's results/tables folder")
    parser.add_argument("second", type=Path, help="run B's results/tables folder")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not (folder / "table1.csv").is_file() or not (folder / "certification_cost.csv").is_file():
            parser.error(f"{folder} holds no table1.csv and certification_cost.csv: give a results/tables folder")
    rows = []
    for name, cells in (("table1", TABLE1_CELLS), ("certification_cost", COST_CELLS)):
        first, second = (pd.read_csv(folder / f"{name}.csv") for folder in (args.first, args.second))
        rows += compare(first, second, cells, name)
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(frame.to_string(index=False))
    absolute = frame["cell"].isin(ABSOLUTE_CELLS)
    for label, part in (("ratio", frame[~absolute]), ("absolute", frame[absolute])):
        moved = part[~part["verdict"].str.startswith("within")]
        unmarked = part[part["verdict"] == "MOVED"]
        print(
            f"{label} cells: {len(part)}; {len(moved)} moved beyond ±15% ({len(unmarked)} unmarked); largest move "
            f"{part['B ÷ A'].max():.3f} / {part['B ÷ A'].min():.3f}"
        )
    return 1 if (frame["verdict"] == "MOVED").any() else 0


if __name__ == "__main__":
    sys.exit(main())
