"""Training methods by name, as a config names them: how a net is trained and which certifier judges it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A training method: the losses it trains with (the first is the default), the certifier its results
    are reported with, Adam's ε in its authors' code, and the label tables print."""

    name: str
    losses: tuple[str, ...]
    certifier: str
    adam_epsilon: float
    labels: tuple[str, ...]
    reference: str

    def label(self, loss: str) -> str:
        return self.labels[self.losses.index(loss)]


METHODS = {
    "gloro": Method(
        "gloro", ("gloro", "trades"), "global", 1e-7, ("GloRo", "GloRo-T"), "Leino, Wang & Fredrikson, ICML 2021"
    ),
    "kw": Method("kw", ("kw",), "kw", 1e-8, ("KW",), "Wong, Schmidt, Metzen & Kolter, NeurIPS 2018 (ℓ2)"),
    "bcp": Method("bcp", ("bcp",), "bcp", 1e-8, ("BCP",), "Lee, Lee & Park, NeurIPS 2020"),
}

COST_REFERENCE = "GloRo"  # Table 1 divides this label's training time and memory by every other row's


def methods() -> list[str]:
    """Names `get_method` knows."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method registered as `name`; an unknown name raises listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]
