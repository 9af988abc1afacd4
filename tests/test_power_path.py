"""The power iteration's path is chosen by timing on this machine, kept per machine, and can be forced."""

import json
import time

import pytest
import torch
from torch import nn

from gloro import native, power_path
from gloro.lipschitz import Conv2dBound, LinearBound


@pytest.fixture
def fresh_choices(tmp_path, monkeypatch):
    """No choice made yet: an empty cache folder and a process that has chosen nothing."""
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv(power_path.OVERRIDE, raising=False)
    power_path.forget_choices()
    yield tmp_path
    power_path.forget_choices()


def never() -> None:
    raise AssertionError("a candidate ran although the choice was already known")


def test_the_faster_path_is_chosen_and_kept_for_the_machine(fresh_choices):
    calls = {"slow": 0, "fast": 0}

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.003)

    def fast() -> None:
        calls["fast"] += 1

    assert power_path.choose("op", {"slow": slow, "fast": fast}) == "fast"
    assert calls["slow"] >= power_path.MIN_ROUNDS and calls["fast"] >= power_path.MIN_ROUNDS  # both really timed
    recorded = json.loads(power_path.choices_file().read_text())
    (entry,) = recorded.values()
    assert entry["path"] == "fast" and entry["seconds"]["slow"] > entry["seconds"]["fast"]
    assert power_path.choose("op", {"slow": never, "fast": never}) == "fast"  # this process remembers
    power_path.forget_choices()
    assert power_path.choose("op", {"slow": never, "fast": never}) == "fast"  # and so does the machine


def test_a_machine_of_another_kind_measures_afresh(fresh_choices, monkeypatch):
    power_path.choose("op", {"a": lambda: None, "b": lambda: time.sleep(0.003)})
    before = power_path.choices_file()
    monkeypatch.setattr(native, "processor", lambda: "another processor")
    assert power_path.choices_file() != before
    monkeypatch.undo()
    monkeypatch.setattr(native, "cache_dir", lambda: fresh_choices)
    assert power_path.choices_file() == before
    monkeypatch.setattr(power_path, "library_build", lambda: "gloro-native-from-changed-sources.so")
    assert power_path.choices_file() != before  # a changed C loop is timed afresh


def test_the_override_is_taken_where_the_operator_has_it_and_a_typo_is_an_error(fresh_choices, monkeypatch):
    monkeypatch.setenv(power_path.OVERRIDE, "columns")
    assert power_path.choose("conv", {"compiled": never, "columns": never, "convolutions": never}) == "columns"
    assert power_path.choose("linear", {"compiled": lambda: time.sleep(0.003), "matmul": lambda: None}) == "matmul"
    monkeypatch.setenv(power_path.OVERRIDE, "colums")
    with pytest.raises(ValueError, match="colums.*compiled, columns, convolutions, matmul"):
        power_path.choose("conv", {"compiled": never, "columns": never})


def test_an_operator_with_one_path_is_not_timed(fresh_choices):
    assert power_path.choose("big conv", {"convolutions": never}) == "convolutions"
    assert not power_path.choices_file().exists()


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_choosing_leaves_the_iterate_where_it_was(fresh_choices, kind):
    torch.manual_seed(0)
    layer = nn.Linear(30, 20) if kind == "linear" else nn.Conv2d(2, 8, 3, 2, 1)
    bound = LinearBound(layer, None) if kind == "linear" else Conv2dBound(layer, (2, 10, 10), None)
    start = bound.iterate.clone()
    chosen = bound.path_for(layer.weight.detach())
    assert chosen in bound.paths(layer.weight.detach())
    assert torch.equal(bound.iterate, start)
    bound.advance(layer.weight.detach(), 4)
    by_default = bound.iterate.clone()
    bound.iterate.copy_(start)
    bound.advance(layer.weight.detach(), 4, chosen)
    assert torch.equal(bound.iterate, by_default)  # the default is the chosen path, and nothing else


def test_a_path_the_operator_lacks_is_refused_by_name():
    layer = nn.Conv2d(3, 4, 3)
    bound = Conv2dBound(layer, (3, 8, 8), None)
    bound.as_matrix = False  # as for operators too large for gathered columns
    assert bound.paths(layer.weight) == ("convolutions",)
    with pytest.raises(ValueError, match="'columns'.*convolutions"):
        bound.advance(layer.weight.detach(), 2, "columns")
