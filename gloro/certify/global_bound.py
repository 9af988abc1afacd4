"""GloRo's own certificate: the global margin Lipschitz constants K_ij, computed soundly once per call."""

from __future__ import annotations

from gloro.certify.base import Certifier
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet
from gloro.sound_constants import SoundConstants


@register_certifier
class GlobalCertifier(Certifier):
    """radius = min_{i≠j} (y_j − y_i − O_ij)/K_ij with the sound K_ij and rounding offsets O_ij (the frozen
    ones after `freeze()`; `fast_bounds` takes convs' circulant bounds for an unfrozen net, still sound and a
    little looser, as training's per-epoch evaluation does); the box-wide O_ij first, each point's own where
    they decide the outcome (`SoundConstants.refine`). One forward pass per batch, plus a few float32 passes
    (and, where needed, a float64 one) over the points in that band: 1.4 to 4.5 times a forward pass on the
    trained nets of benchmarks/README.md, the more the more points the box-wide offsets leave undecided."""

    name = "global"

    def __init__(self, batch_size: int | None = None, fast_bounds: bool = False) -> None:
        super().__init__(batch_size)
        self.fast_bounds = bool(fast_bounds)

    @property
    def settings(self) -> dict:
        return {**super().settings, "fast_bounds": self.fast_bounds}

    def prepare(self, net: GloroNet, epsilon: float) -> SoundConstants:
        return net.sound_constants(fast=self.fast_bounds)

    def certify_batch(self, net, x, epsilon, state):
        certificate = state.certify(x, net.predict_clean(x), epsilon)
        return certificate.predictions, certificate.certified, certificate.radius
