"""How each stage of an experiment runs: train, time steps, certify, attack and audit, compare bounds, one
module each.

The pipeline's rule scripts are a few lines around these functions; each writes its outputs atomically
into the experiment's run folder.
"""

from gloro.bench.stages.attack import attack_experiment, proven_robust
from gloro.bench.stages.bounds import bounds_experiment
from gloro.bench.stages.certify import certify_experiment, read_certificates
from gloro.bench.stages.loading import load_for_evaluation, new_net, write_csv
from gloro.bench.stages.step_cost import step_cost_experiment
from gloro.bench.stages.train import recipe_settings, train_experiment

__all__ = [
    "attack_experiment",
    "bounds_experiment",
    "certify_experiment",
    "load_for_evaluation",
    "new_net",
    "proven_robust",
    "read_certificates",
    "recipe_settings",
    "step_cost_experiment",
    "train_experiment",
    "write_csv",
]
