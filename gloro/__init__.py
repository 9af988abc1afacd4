"""gloro-bench: Globally-Robust Neural Networks (Leino, Wang, Fredrikson, ICML 2021) in PyTorch."""

from gloro.architectures import ArchitectureSpec, architectures, create_model
from gloro.checkpoint import CheckpointError, load, save
from gloro.evaluate import evaluate
from gloro.gloro_net import GloroNet
from gloro.layers import MinMax
from gloro.lipschitz import UnsupportedLayerError, bound_for
from gloro.losses import gloro_cross_entropy, gloro_trades
from gloro.margin import Certificate
from gloro.schedules import Constant, DecayAfterHalf, Linear, LogarithmicHalf, schedule_from_config
from gloro.train import TrainingRecipe, train

__version__ = "0.1.0"

__all__ = [
    "ArchitectureSpec",
    "Certificate",
    "CheckpointError",
    "Constant",
    "DecayAfterHalf",
    "GloroNet",
    "Linear",
    "LogarithmicHalf",
    "MinMax",
    "TrainingRecipe",
    "UnsupportedLayerError",
    "__version__",
    "architectures",
    "bound_for",
    "create_model",
    "evaluate",
    "gloro_cross_entropy",
    "gloro_trades",
    "load",
    "save",
    "schedule_from_config",
    "train",
]
