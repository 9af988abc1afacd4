"""`GloroNet`: wraps a sequential network so that every prediction carries an ℓ2 robustness certificate."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from gloro.certificate import Certificate
from gloro.lipschitz import ConstantBound, bound_for
from gloro.margin import certify_logits, head_distances, with_bottom


def flatten_sequential(model: nn.Module) -> list[nn.Module]:
    """The leaf layers of a (possibly nested) nn.Sequential, in order of application."""
    if type(model) is not nn.Sequential:
        raise TypeError(
            f"GloroNet needs an nn.Sequential (got {type(model).__name__}): the product of per-layer bounds "
            "is a Lipschitz bound only for a plain composition of layers"
        )
    layers: list[nn.Module] = []
    for child in model:
        layers.extend(flatten_sequential(child) if type(child) is nn.Sequential else [child])
    return layers


def layer_input_shapes(layers: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The per-example input shape of every layer, found by one forward pass of a zero example."""
    shapes = []
    reference = next((p for layer in layers for p in layer.parameters()), torch.empty(0))
    x = torch.zeros((1, *input_shape), dtype=reference.dtype, device=reference.device)
    with torch.no_grad():
        for layer in layers:
            shapes.append(tuple(x.shape[1:]))
            try:
                x = layer(x)
            except RuntimeError as error:
                raise ValueError(
                    f"input_shape {tuple(input_shape)} does not fit the model: layer {layer!r} fails on "
                    f"inputs of shape {tuple(x.shape[1:])} ({error})"
                ) from error
    return shapes


def check_epsilon(epsilon: float) -> float:
    """ε must be a finite, non-negative number."""
    value = float(epsilon)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    return value


class GloroNet(nn.Module):
    """A GloRo Net: the wrapped model's logits y plus y_⊥ = max_{i≠j}(y_i + ε·K_ij), j = argmax y.

    K is the product of the Lipschitz bounds of every layer but the last (which must be nn.Linear with rows
    w_i), and K_ij = K·‖w_i − w_j‖₂. Training uses power-iteration estimates of K (`power_iterations` steps
    per training forward, iterates persisted as buffers); certification uses sound upper bounds.
    """

    def __init__(
        self,
        model: nn.Sequential,
        epsilon: float,
        *,
        input_shape: Sequence[int] | None = None,
        eval_epsilon: float | None = None,
        power_iterations: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        layers = flatten_sequential(model)
        if not layers or type(layers[-1]) is not nn.Linear:
            last = type(layers[-1]).__name__ if layers else "nothing"
            raise TypeError(f"GloroNet needs a model whose last layer is nn.Linear (the logit layer), got {last}")
        if power_iterations < 0:
            raise ValueError(f"power_iterations must be >= 0, got {power_iterations}")
        architecture = getattr(model, "architecture", None)
        if input_shape is None:
            input_shape = infer_input_shape(layers, architecture)
        self.model = model
        self.layers = layers
        self.input_shape = tuple(int(n) for n in input_shape)
        self.epsilon = epsilon
        self.eval_epsilon = epsilon if eval_epsilon is None else eval_epsilon
        self.power_iterations = int(power_iterations)
        generator = torch.Generator().manual_seed(seed)
        shapes = layer_input_shapes(layers, self.input_shape)
        self.bounds = nn.ModuleList(bound_for(layer, shape, generator) for layer, shape in zip(layers[:-1], shapes))
        self.constant_factor = math.prod(b.sound_value for b in self.bounds if isinstance(b, ConstantBound))
        self.metadata: dict = {}
        self.register_buffer("frozen_margin_lipschitz", None, persistent=False)

    @property
    def architecture(self):
        """The registry spec the model was built from (None for a hand-built model)."""
        return getattr(self.model, "architecture", None)

    @property
    def head(self) -> nn.Linear:
        """The last (logit) layer, whose rows w_i enter K_ij."""
        return self.layers[-1]

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def epsilon(self) -> float:
        """The ε of the ⊥ logit in `forward` (the training radius)."""
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        self._epsilon = check_epsilon(value)

    @property
    def eval_epsilon(self) -> float:
        """The ε that `certify` uses by default (recipes train at one ε and evaluate at another)."""
        return self._eval_epsilon

    @eval_epsilon.setter
    def eval_epsilon(self, value: float) -> None:
        self._eval_epsilon = check_epsilon(value)

    @property
    def frozen(self) -> bool:
        return self.frozen_margin_lipschitz is not None

    def check_input(self, x: torch.Tensor) -> None:
        """Reject a batch whose example shape differs from the shape the bounds were computed for."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected inputs of shape (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}; "
                "the Lipschitz bounds hold for the input shape given at construction"
            )

    def layer_bounds(self, sound: bool = False) -> list[torch.Tensor]:
        """Per-layer bounds of every layer but the last; power-iteration estimates advance only in training."""
        if sound:
            return [bound.sound(layer) for bound, layer in zip(self.bounds, self.layers)]
        iterations = self.power_iterations if self.training else 0
        return [bound.estimate(layer, iterations) for bound, layer in zip(self.bounds, self.layers)]

    def sub_lipschitz(self, sound: bool = False) -> torch.Tensor:
        """K: the product of the bounds of all layers but the last."""
        values = self.layer_bounds(sound)
        if sound:
            factor, dtype = 1.0, torch.float64
        else:  # fixed constants (activations, pooling) enter as one number: fewer nodes for backward to walk
            values = [value for value, bound in zip(values, self.bounds) if not isinstance(bound, ConstantBound)]
            factor, dtype = self.constant_factor, self.head.weight.dtype
        product = torch.tensor(factor, dtype=dtype, device=self.head.weight.device)
        for value in values:
            product = product * value
        return product

    def lipschitz_constant(self, sound: bool = True) -> torch.Tensor:
        """The m×m matrix K_ij = K·‖w_i − w_j‖₂ (sound: float64, exact distances; else the training estimate)."""
        if self.frozen and sound:
            return self.frozen_margin_lipschitz
        return self.sub_lipschitz(sound) * head_distances(self.head.weight, exact=sound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The m+1 logits [y, y_⊥] at `self.epsilon`."""
        self.check_input(x)
        if self.frozen:
            if self.training:
                raise RuntimeError("this GloroNet is frozen; call unfreeze() before training it")
            return with_bottom(self.model(x), self.frozen_margin_lipschitz, self.epsilon)
        return with_bottom(self.model(x), self.lipschitz_constant(sound=False), self.epsilon)

    def predict_clean(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits y, without ⊥."""
        self.check_input(x)
        return self.model(x)

    def certify(self, x: torch.Tensor, epsilon: float | None = None) -> Certificate:
        """Predictions, the certified mask at ε (default `eval_epsilon`) and each point's certified radius.

        Uses sound constants: frozen ones after `freeze()`, otherwise computed on this call.
        """
        radius = self.eval_epsilon if epsilon is None else check_epsilon(epsilon)
        with torch.no_grad():
            return certify_logits(self.predict_clean(x), self.lipschitz_constant(sound=True), radius)

    @torch.no_grad()
    def converge(self, tol: float = 1e-4, max_iterations: int = 10_000, check_every: int = 10) -> torch.Tensor:
        """Run power iteration until K changes by less than `tol` (relative) between checks; returns K.

        Warns when `max_iterations` is reached first: estimates then lie further below the true norms (the
        sound bounds that certify uses do not depend on convergence).
        """

        def estimate(iterations: int) -> torch.Tensor:
            return math.prod(float(b.estimate(layer, iterations)) for b, layer in zip(self.bounds, self.layers))

        previous = estimate(0)
        for _ in range(0, max_iterations, check_every):
            current = estimate(check_every)
            if abs(current - previous) <= tol * max(abs(current), 1e-12):
                return torch.tensor(current)
            previous = current
        warnings.warn(f"power iteration did not converge to tol={tol} in {max_iterations} iterations", stacklevel=2)
        return torch.tensor(previous)

    def freeze(self, tol: float = 1e-4) -> GloroNet:
        """Converge, compute the sound K_ij once, and switch to eval: inference is then one forward pass."""
        self.converge(tol)
        self.eval()
        with torch.no_grad():
            self.frozen_margin_lipschitz = self.lipschitz_constant(sound=True)
        return self

    def unfreeze(self) -> GloroNet:
        """Drop the frozen constants so that training can continue."""
        self.frozen_margin_lipschitz = None
        return self

    def bound_report(self) -> list[dict]:
        """Per-layer power-iteration estimate, sound bound and their ratio (sound / estimate ≥ 1 at convergence)."""
        rows = []
        with torch.no_grad():
            for layer, bound in zip(self.layers, self.bounds):
                estimate, sound = float(bound.estimate(layer, 0)), float(bound.sound(layer))
                rows.append(
                    {
                        "layer": repr(layer),
                        "estimate": estimate,
                        "sound": sound,
                        "ratio": sound / estimate if estimate else math.inf,
                    }
                )
        return rows


def infer_input_shape(layers: Sequence[nn.Module], architecture) -> tuple[int, ...]:
    """Input shape from the registry spec, or from a leading Linear; convolutions need it given."""
    if architecture is not None:
        return tuple(architecture.input_shape)
    first = next((layer for layer in layers if type(layer) not in (nn.Flatten, nn.Identity)), None)
    if type(first) is nn.Linear and not any(isinstance(layer, nn.Conv2d | nn.AvgPool2d) for layer in layers):
        return (first.in_features,)
    raise ValueError("GloroNet needs input_shape=(C, H, W): convolutions are bounded at their real input size")
