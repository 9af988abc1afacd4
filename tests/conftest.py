"""Fixtures shared by several test files."""

import pytest

import gloro
from gloro import native
from gloro.data import load_digits

EPSILON = 0.3


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
    return request.param
