"""Every certifier behind one interface: `create_certifier(name)(net, images, ε)` returns a `Certificate`.

Registered: global (GloRo's K_ij), local (local Lipschitz), crown, kw (the KW dual), bcp (ball and box).
"""

from gloro.certificate import Certificate
from gloro.certify import bcp, crown, global_bound, kw, local  # noqa: F401  (each module registers its certifiers)
from gloro.certify.base import Certifier
from gloro.certify.registry import create_certifier, list_certifiers, register_certifier

__all__ = ["Certificate", "Certifier", "create_certifier", "list_certifiers", "register_certifier"]
