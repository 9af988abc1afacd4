"""Local certifiers of one given net: the local Lipschitz bound and CROWN (gloro.local_certify computes both)."""

from __future__ import annotations

from gloro.certify.base import Certifier
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet
from gloro.local_certify import LocalPlan, certify_crown, certify_local


class PlannedCertifier(Certifier):
    """A certifier that reuses one `LocalPlan` (float64 operators, explicit matrices, global K_ij) per call."""

    default_batch_size = 64

    def prepare(self, net: GloroNet, epsilon: float) -> LocalPlan:
        return LocalPlan(net)


@register_certifier
class LocalLipschitzCertifier(PlannedCertifier):
    """Per point, ReLUs proven off on the ball are removed and each layer's norm is bounded on what remains;
    capped by the global K_ij. Its radius min(r, ε) is sound at every radius up to ε."""

    name = "local"

    def certify_batch(self, net, x, epsilon, state):
        certificate = certify_local(net, x, epsilon, state)
        return certificate.predictions, certificate.certified, certificate.radius


@register_certifier
class CrownCertifier(PlannedCertifier):
    """CROWN from an ℓ2 ball (linear bound propagation); ReLU nets small enough for explicit layer matrices."""

    name = "crown"

    def certify_batch(self, net, x, epsilon, state):
        certificate = certify_crown(net, x, epsilon, state)
        return certificate.predictions, certificate.certified, None
