"""gloro-bench: Globally-Robust Neural Networks (Leino, Wang, Fredrikson, ICML 2021) in PyTorch."""

from gloro.architectures import ArchitectureSpec, architectures, create_model
from gloro.attack import (
    AttackReport,
    SoundnessError,
    audit_soundness,
    autoattack_accuracy,
    pgd_accuracy,
    robust_accuracy,
)
from gloro.certificate import Certificate
from gloro.certify import Certifier, create_certifier, list_certifiers
from gloro.certify.compare import compare_certifiers
from gloro.checkpoint import CheckpointError, load, save
from gloro.cpu_memory import keep_freed_memory
from gloro.evaluate import STANDARD_RADII, CertificationReport, certification_report, evaluate, vra_at_radii
from gloro.gloro_net import GloroNet
from gloro.layers import MinMax
from gloro.lipschitz import UnsupportedLayerError, bound_for
from gloro.local_certify import (
    CrownCertificate,
    LocalBounds,
    LocalCertificate,
    certify_crown,
    certify_local,
    compare_local_global,
    local_lipschitz,
)
from gloro.losses import gloro_cross_entropy, gloro_trades
from gloro.schedules import Constant, DecayAfterHalf, Linear, LogarithmicHalf, schedule_from_config
from gloro.tightness import (
    global_tightness,
    local_margin_lipschitz_lower_bound,
    local_tightness,
    margin_lipschitz_lower_bound,
)
from gloro.train import BestModel, TrainingHistory, TrainingRecipe, train, training_cost

__version__ = "0.1.0"

__all__ = [
    "STANDARD_RADII",
    "ArchitectureSpec",
    "AttackReport",
    "BestModel",
    "Certificate",
    "CertificationReport",
    "Certifier",
    "CheckpointError",
    "Constant",
    "CrownCertificate",
    "DecayAfterHalf",
    "GloroNet",
    "Linear",
    "LocalBounds",
    "LocalCertificate",
    "LogarithmicHalf",
    "MinMax",
    "SoundnessError",
    "TrainingHistory",
    "TrainingRecipe",
    "UnsupportedLayerError",
    "__version__",
    "architectures",
    "audit_soundness",
    "autoattack_accuracy",
    "bound_for",
    "certification_report",
    "certify_crown",
    "certify_local",
    "compare_certifiers",
    "compare_local_global",
    "create_certifier",
    "create_model",
    "evaluate",
    "global_tightness",
    "gloro_cross_entropy",
    "gloro_trades",
    "keep_freed_memory",
    "list_certifiers",
    "load",
    "local_lipschitz",
    "local_margin_lipschitz_lower_bound",
    "local_tightness",
    "margin_lipschitz_lower_bound",
    "pgd_accuracy",
    "robust_accuracy",
    "save",
    "schedule_from_config",
    "train",
    "training_cost",
    "vra_at_radii",
]
