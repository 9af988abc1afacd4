"""gloro-bench: Globally-Robust Neural Networks (Leino, Wang, Fredrikson, ICML 2021) in PyTorch.

The public API is one name per job; everything else is reachable from its submodule (`gloro.certify.local`,
`gloro.tightness`, `gloro.schedules`, `gloro.losses`, ...).
"""

from gloro import families as _families  # noqa: F401  (registers the families' layers and architectures)
from gloro.architectures import create_model, list_architectures, register_architecture
from gloro.attack import autoattack_accuracy, pgd_accuracy
from gloro.audit import SoundnessError, audit_soundness
from gloro.certificate import Certificate
from gloro.certify import Certifier, create_certifier, list_certifiers, register_certifier
from gloro.certify.compare import compare_certifiers
from gloro.checkpoint import load, save
from gloro.evaluation import evaluate
from gloro.gloro_net import GloroNet
from gloro.layers import MinMax
from gloro.methods import Method, list_methods, register_method
from gloro.schedules import schedule_from_config
from gloro.training import TrainingRecipe, train

__version__ = "0.1.0"

__all__ = [
    "Certificate",
    "Certifier",
    "GloroNet",
    "Method",
    "MinMax",
    "SoundnessError",
    "TrainingRecipe",
    "audit_soundness",
    "autoattack_accuracy",
    "compare_certifiers",
    "create_certifier",
    "create_model",
    "evaluate",
    "list_architectures",
    "list_certifiers",
    "list_methods",
    "load",
    "pgd_accuracy",
    "register_architecture",
    "register_certifier",
    "register_method",
    "save",
    "schedule_from_config",
    "train",
]
