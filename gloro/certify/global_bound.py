"""GloRo's own certificate: the global margin Lipschitz constants K_ij, computed soundly once per call."""

from __future__ import annotations

from gloro.certify.base import Certifier
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet, SoundConstants
from gloro.margin import certify_logits


@register_certifier
class GlobalCertifier(Certifier):
    """radius = min_{i≠j} (y_j − y_i − O_ij)/K_ij with the sound K_ij and rounding offsets O_ij (the frozen
    ones after `freeze()`); one
    forward pass per batch, so it costs what inference costs."""

    name = "global"

    def prepare(self, net: GloroNet, epsilon: float) -> SoundConstants:
        return net.sound_constants()

    def certify_batch(self, net, x, epsilon, state):
        certificate = certify_logits(net.predict_clean(x), state.margin_lipschitz, epsilon, offsets=state.offsets)
        return certificate.predictions, certificate.certified, certificate.radius
