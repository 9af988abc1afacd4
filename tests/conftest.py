"""Fixtures shared by several test files, and how the suite runs: its own cache folder, threads shared
among the workers, the long tests first."""

import os
import shutil
import tempfile

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

import gloro
from gloro import native
from gloro.conv_norms import conv_padding
from gloro.data import load_digits
from gloro.layer_rules import affine_map
from gloro.outward import gamma, unit_roundoff

EPSILON = 0.3
U32 = unit_roundoff(torch.float32)  # float32's unit roundoff, 2⁻²⁴


# The suite's own cache folder (compiled loops, the power-iteration paths timed here, prepared data): what
# the suite measures while its workers share the cores never steers a user's runs, and no test depends on
# what earlier runs left in ~/.cache. Set once by the first process; xdist's workers and every pipeline job
# the tests start inherit it.
SUITE_CACHE = "GLORO_SUITE_CACHE"


def pytest_configure(config: pytest.Config) -> None:
    if SUITE_CACHE not in os.environ:
        folder = tempfile.mkdtemp(prefix="gloro-suite-cache-")
        os.environ[SUITE_CACHE] = os.environ["XDG_CACHE_HOME"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # share the cores: each worker's torch threads on its share, not every core each
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long tests (marked slow) first, so that the workers finish together, not one on the last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def gamma32(n: int) -> float:
    """γ_n in float32 (Higham): the relative error bound of an n-term sum or inner product, any order."""
    return gamma(n, U32)


@pytest.fixture(scope="session")
def trained():
    """2C2F trained on digits for 10 epochs at ε = 0.45 (eval ε = 0.3), frozen, with the test split.

    Shared by the session: tests must not change it (copy it first).
    """
    x_train, y_train = load_digits("train")
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.45, eval_epsilon=EPSILON, seed=0)
    gloro.train(net, x_train, y_train, gloro.TrainingRecipe(epochs=10, batch_size=64, seed=0), progress=False)
    return net.freeze(), load_digits("test")


@pytest.fixture(params=["compiled", "pytorch"])
def power_loop(request, monkeypatch):
    """Run a test once with the compiled power iteration (gloro.native) and once with the PyTorch loops."""
    if request.param == "pytorch":
        monkeypatch.setattr(native, "library", lambda: None)
    elif native.library() is None:
        pytest.skip("the compiled power iteration could not be built on this machine")
    else:  # taken wherever an operator has it, whichever path is fastest here
        monkeypatch.setenv("GLORO_POWER_PATH", "compiled")
    return request.param


def conv_case_strategy(in_channels: int, out_channels: int, kernel: int, size: int) -> st.SearchStrategy:
    """Conv2d settings (in, out, kernel, stride, padding, height, width) up to these sizes, stride ≤ 3,
    padding ≤ 2, inputs from 4×4, where the kernel fits the padded input."""
    return st.tuples(
        st.integers(1, in_channels),
        st.integers(1, out_channels),
        st.integers(1, kernel),
        st.integers(1, 3),
        st.integers(0, 2),
        st.integers(4, size),
        st.integers(4, size),
    ).filter(lambda c: c[2] <= c[5] + 2 * c[4] and c[2] <= c[6] + 2 * c[4])


def float32_estimate_slack(layer: nn.Module, bound) -> float:
    """How far above ‖A‖₂ a float32 estimate ‖Ax‖ at a unit x can round, relative: γ_{n+1}·‖|A|‖₂/‖A‖₂ for a
    Linear or Conv2d of fan-in n (Higham, Thm 3.5, and ‖|A||x|‖ ≤ ‖|A|‖₂), with ‖|A|‖₂ bounded from above
    (`AffineMap.abs_norm`) and ‖A‖₂ from below by ‖Ax‖/‖x‖ at the bound's iterate x, both in float64."""
    if not isinstance(layer, nn.Linear | nn.Conv2d):
        return 0.0
    weight, x = layer.weight.detach().double(), bound.iterate.detach().double()
    if isinstance(layer, nn.Linear):
        image = F.linear(x.reshape(1, -1), weight)
    else:
        image = F.conv2d(x.reshape(1, *x.shape[-3:]), weight, None, layer.stride, conv_padding(layer))
    return gamma32(weight[0].numel() + 1) * affine_map(layer).abs_norm(0.0) / float(image.norm() / x.norm())
