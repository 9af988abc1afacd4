"""How the tables a user reads are rounded: percent to one decimal, two significant digits, no raw floats."""

import pandas as pd
import pytest

from gloro.bench import figures, tables, views
from gloro.bench.views import significant
from gloro.evaluation import radius_label


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0042, "0.0042"), (1.34, "1.3"), (57.5, "58"), (689, "690"), (1369, "1400"), (0.999, "1.0"), (0, "0")],
)
def test_two_significant_digits_without_exponents(value, text):
    assert significant(value) == text


def test_radii_are_named_as_papers_name_them():
    assert [radius_label(e) for e in (0.3, 1.58, 36 / 255, 0.1411764705882353)] == ["0.3", "1.58", "36/255", "36/255"]


def test_the_training_curves_mark_the_best_on_test_epoch_on_the_test_vra_panel(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    history = pd.DataFrame(
        {
            "experiment": ["a"] * 3 + ["b"] * 3,
            "epoch": [0, 1, 2] * 2,
            "loss": [1.0, 0.8, 0.7] * 2,
            "clean_accuracy": [0.5, 0.6, 0.7] * 2,
            "vra": [0.1, 0.2, 0.3] * 2,
            "epsilon": [0.3] * 6,
            "eval_clean_accuracy": [0.5, 0.7, 0.6, 0.4, 0.5, 0.6],
            "eval_vra": [0.2, 0.4, 0.3, 0.1, 0.2, 0.3],
        }
    )
    saved = []
    monkeypatch.setattr(figures, "save_figure", lambda figure, stem: saved.append(figure))
    figures.plot_training_curves(history, tmp_path / "curves", {"a": 1, "b": None})
    (figure,) = saved
    assert isinstance(figure, Figure) and len(figure.axes) == 6
    titles = [axis.get_title() for axis in figure.axes]
    assert "VRA at eval ε, test" in titles and "clean accuracy, test" in titles
    test_vra = figure.axes[titles.index("VRA at eval ε, test")]
    stars = [line for line in test_vra.lines if line.get_marker() == "*" and len(line.get_xdata())]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([2], [0.4])]  # a's epoch 1, shown as 2


def test_table1_has_an_autoattack_column_only_when_a_run_measured_it():
    row = {column: None for column in tables.TABLE1_COLUMNS}
    row.update(dataset="mnist", epsilon=0.3, architecture="2C2F", method="GloRo", clean=99.0, pgd=97.0, vra=95.0)
    row.update(sec_per_epoch=3.6, peak_mem_mb=400.0, cert_ms_per_point=0.01)
    without = views.table1_view(pd.DataFrame([row], columns=tables.TABLE1_COLUMNS))
    assert "AutoAttack %" not in without.columns
    measured = views.table1_view(pd.DataFrame([{**row, "autoattack": 96.04}], columns=tables.TABLE1_COLUMNS))
    assert measured["AutoAttack %"].tolist() == ["96.0"]
    assert list(measured.columns).index("AutoAttack %") == list(measured.columns).index("PGD %") + 1


def test_autoattack_on_fewer_points_than_pgd_is_noted_with_pgd_on_the_same_points():
    run = {"autoattack_points": 1000, "test_examples": 10000, "pgd_accuracy_on_autoattack_points": 0.8091}
    assert tables.autoattack_note(run) == (
        "AutoAttack on the first 1,000 of 10,000 test points (PGD on those points: 80.9%)"
    )
    assert tables.autoattack_note({**run, "autoattack_points": 10000}) is None  # the same points as PGD
    assert tables.autoattack_note({**run, "autoattack_points": None}) is None


def test_long_notes_become_numbered_footnotes_and_short_ones_stay():
    view = pd.DataFrame({"Method": ["KW", "BCP", "GloRo"], "Note": ["not run: " + "x" * 40, "short", ""]})
    shortened, footnotes = views.with_footnotes(view)
    assert shortened["Note"].tolist() == ["not run [1]", "short", ""]
    assert footnotes == ["not run: " + "x" * 40]


def table1_cost_row(**values) -> dict:
    row = {column: None for column in tables.TABLE1_COLUMNS}
    row.update(dataset="digits", epsilon=0.3, architecture="2C2F", method="KW", clean=88.0, pgd=78.0, vra=74.0)
    return {**row, "sec_per_epoch": 1.2, "peak_mem_mb": 783.0, "cert_ms_per_point": 1.5, **values}


@pytest.mark.parametrize(
    ("ratio", "low", "high", "text"),
    [
        (0.076, 0.07, 0.082, "0.076× (0.070–0.082×)"),  # within ±15%: the number, and its spread
        (0.076, 0.05, 0.09, "unsteady: 0.050–0.090×"),  # beyond: too short a run to give one number
        (0.076, None, None, "0.076×"),  # one later epoch a side: no spread to show
    ],
)
def test_the_time_ratio_is_printed_with_its_spread_or_as_unsteady(ratio, low, high, text):
    row = table1_cost_row(gloro_time_ratio=ratio, gloro_time_ratio_low=low, gloro_time_ratio_high=high)
    view = views.table1_view(pd.DataFrame([row], columns=tables.TABLE1_COLUMNS))
    assert view["GloRo time ÷ this"].tolist() == [text]


def test_the_time_ratio_is_the_one_timed_in_the_rows_own_job_not_one_from_two_jobs_epochs():
    def run(method, seconds, ratio=None):
        row = dict(dataset="digits", eval_epsilon=0.3, architecture="2C2F", method=method, experiment=method)
        row.update(certifier="global", clean_accuracy=0.9, pgd_accuracy=0.8, vra=0.7, train_examples=1000)
        row.update(sec_per_epoch=seconds, sec_per_epoch_min=seconds, sec_per_epoch_max=seconds, peak_mem_mb=400.0)
        row.update(peak_mem_source="cpu_process_max_rss", cert_sec_per_point=1e-5)
        spread = (None, None, None) if ratio is None else (ratio, 0.9 * ratio, 1.1 * ratio)
        return row | dict(
            zip(("reference_time_ratio", "reference_time_ratio_low", "reference_time_ratio_high"), spread)
        )

    runs = pd.DataFrame([run("GloRo", 0.1), run("KW", 1.0, ratio=0.03), run("GloRo-T", 0.12, ratio=0.9)])
    published = pd.DataFrame(
        columns=["dataset", "epsilon", "architecture", "method", "metric", "value_percent", "source"]
    )
    table = tables.table1(runs, published).set_index("method")
    assert table.loc["KW", "gloro_time_ratio"] == 0.03  # not 0.1 / 1.0 from the two jobs' epochs
    assert (table.loc["KW", "gloro_time_ratio_low"], table.loc["KW", "gloro_time_ratio_high"]) == (
        0.9 * 0.03,
        1.1 * 0.03,
    )
    assert table.loc["GloRo-T", "gloro_time_ratio"] == 0.9 and pd.isna(table.loc["GloRo", "gloro_time_ratio"])
    assert table.loc["KW", "gloro_mem_ratio"] == 1.0 and pd.isna(table.loc["GloRo", "gloro_mem_ratio"])


@pytest.mark.parametrize(
    ("value", "low", "high", "text"),
    [
        (0.25, 0.24, 0.26, "0.25× (0.24–0.26×)"),
        (0.25, 0.2, 0.26, "unsteady: 0.20–0.26×"),  # the spread leaves ±15% of the ratio: not one number
        (210.0, 190.0, 260.0, "unsteady: 190–260×"),
        (0.25, None, None, "0.25×"),  # a run folder written before the spread was kept
        (None, None, None, ""),
    ],
)
def test_a_ratio_is_printed_with_its_spread_or_as_unsteady(value, low, high, text):
    from gloro.bench.views import spread_cell

    assert spread_cell(value, low, high) == text


def test_a_net_the_local_certifier_cannot_follow_gets_marked_cells_and_the_reason(tmp_path):
    """A residual net's bounds.json has no local row, only why it was left out: the cost table marks its
    local cells and the caption says why, instead of the report failing after all the training."""
    import json
    from types import SimpleNamespace

    row = {"num_points": 50, "vra": 0.5, "sec_per_point": 1e-4}
    reason = "local bounds follow a chain of layers, not a residual layer (Residual(...))"
    bounds = {"certifiers": [{"certifier": "global", **row}], "unsupported": {"local": reason}, "tightness": {}}
    (tmp_path / "bounds.json").write_text(json.dumps(bounds))
    runs = pd.DataFrame(
        [{"experiment": "r", "eval_epsilon": 0.3, "forward_points_per_second": 1e5, "certify_points_per_second": 9e4}]
    )
    cost = tables.certification_cost(runs, {"r": SimpleNamespace(bounds=tmp_path / "bounds.json")})
    view = views.cost_view(cost)
    assert view.loc[0, "VRA % local"] == views.NOT_RUN and view.loc[0, "Only local"] == views.NOT_RUN
    assert view.loc[0, "VRA % global"] == "50.0" and view.loc[0, "Points"] == 50
    machine = runs.assign(device_name="a CPU", torch_version="2.13.0")
    caption = views.cost_caption(machine, "2026-12-07", cost)
    assert reason in caption and views.NOT_RUN in caption
    assert views.NOT_RUN not in views.cost_caption(machine, "2026-12-07", cost.assign(local_unsupported=None))


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(1.0, "none below"), (1.2, "none below"), (1 - 1.7e-6, "1.7 ppm below ⚑"), (0.97, "3.0% below ⚑"), (None, "")],
)
def test_a_claimed_lipschitz_constant_below_the_sound_one_is_flagged_with_how_far(ratio, text):
    assert views.claimed_cell(ratio) == text
