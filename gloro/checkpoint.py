"""One-file checkpoints: weights, power-iteration iterates, architecture, ε, input shape and input scaling.

`load(path)` rebuilds the GloroNet with no other configuration. Files are written atomically (a temporary
file renamed on success), so an interrupted save never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from gloro.architectures import ArchitectureSpec, create_model
from gloro.atomic import torch_save
from gloro.gloro_net import GloroNet

FORMAT = "gloro-bench checkpoint v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match what it claims to hold."""


def save(net: GloroNet, path: str | os.PathLike, *, input_divisor: float, metadata: Mapping | None = None) -> Path:
    """Write `net` to `path`; raw inputs are divided by `input_divisor` to reach the model's [0, 1] scale."""
    if net.architecture is None:
        raise ValueError(
            "gloro.save needs a model built by gloro.create_model (its architecture is what load rebuilds); "
            "for a hand-built model save net.state_dict() with torch.save"
        )
    if not input_divisor > 0:
        raise ValueError(f"input_divisor must be > 0, got {input_divisor}")
    payload = {
        "format": FORMAT,
        "architecture": net.architecture.to_dict(),
        "epsilon": net.epsilon,
        "eval_epsilon": net.eval_epsilon,
        "input_shape": list(net.input_shape),
        "power_iterations": net.power_iterations,
        "input_divisor": float(input_divisor),
        "input_range": list(net.input_range),
        "metadata": dict(metadata or {}),
        "torch_version": str(torch.__version__),
        "state_dict": {key: value.detach().cpu() for key, value in net.state_dict().items()},
    }
    return torch_save(payload, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GloroNet:
    """Rebuild the GloroNet saved at `path` (in eval mode), with its metadata in `net.metadata`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train the model first or check the path")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a {FORMAT!r} file (found {found!r}); was it written by gloro.save?")
    try:
        spec = ArchitectureSpec(
            **{**payload["architecture"], "input_shape": tuple(payload["architecture"]["input_shape"])}
        )
        model = create_model(spec.name, spec.input_shape, spec.num_classes, activation=spec.activation, init=spec.init)
        net = GloroNet(
            model,
            payload["epsilon"],
            input_shape=payload["input_shape"],
            eval_epsilon=payload["eval_epsilon"],
            power_iterations=payload["power_iterations"],
            input_range=payload.get("input_range", (0.0, 1.0)),  # files from before it was saved: [0, 1]
        )
        net.load_state_dict(payload["state_dict"])
        net.metadata = {**payload["metadata"], "input_divisor": float(payload["input_divisor"])}
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} does not match the model it describes: {error!r}") from error
    return net.to(map_location).eval()
