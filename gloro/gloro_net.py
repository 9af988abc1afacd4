"""`GloroNet`: wraps a sequential network so that every prediction carries an ℓ2 robustness certificate."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from gloro.certificate import Certificate
from gloro.forward_error import RoundingModel, box_error
from gloro.inference import forward_in_place
from gloro.layer_bounds import ResidualNorms, bound_for, rounding_norms
from gloro.layer_rules import layer_input_shapes, layer_type, primitives, role_of
from gloro.lipschitz import ConstantBound
from gloro.margin import head_distances, sound_margin_lipschitz, with_bottom
from gloro.outward import product_up
from gloro.precision import exact_arithmetic
from gloro.snapshot import WeightSnapshot
from gloro.sound_constants import SoundConstants


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


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """The input box [lo, hi] the floating-point error bound covers: finite, lo ≤ hi."""
    lo, hi = (float(v) for v in input_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"input_range must be two finite numbers lo <= hi, got {tuple(input_range)}")
    return lo, hi


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
        input_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        layers = flatten_sequential(model)
        if not layers or layer_type(layers[-1]) is not nn.Linear:
            last = type(layers[-1]).__name__ if layers else "nothing"
            raise TypeError(f"GloroNet needs a model whose last layer is nn.Linear (the logit layer), got {last}")
        if layers[-1].out_features < 1:
            raise ValueError("GloroNet needs a logit layer with at least one class, got nn.Linear(out_features=0)")
        if power_iterations < 0:
            raise ValueError(f"power_iterations must be >= 0, got {power_iterations}")
        architecture = getattr(model, "architecture", None)
        if input_shape is None:
            input_shape = infer_input_shape(layers, architecture)
        self.model = model
        self.layers = layers
        self.input_shape = tuple(int(n) for n in input_shape)
        self.input_range = check_input_range(input_range)
        self.epsilon = epsilon
        self.eval_epsilon = epsilon if eval_epsilon is None else eval_epsilon
        self.power_iterations = int(power_iterations)
        generator = torch.Generator().manual_seed(seed)
        shapes = layer_input_shapes(layers, self.input_shape)
        self.bounds = nn.ModuleList(bound_for(layer, shape, generator) for layer, shape in zip(layers[:-1], shapes))
        self.constant_factor = math.prod(b.sound_value for b in self.bounds if isinstance(b, ConstantBound))
        self.metadata: dict = {}
        self.frozen_constants: SoundConstants | None = None
        self.frozen_weights: WeightSnapshot | None = None

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
        return self.frozen_constants is not None

    def check_input(self, x: torch.Tensor) -> None:
        """Reject a batch whose example shape differs from the shape the bounds were computed for."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected inputs of shape (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}; "
                "the Lipschitz bounds hold for the input shape given at construction"
            )

    def check_domain(self, x: torch.Tensor) -> None:
        """Reject points outside `input_range`, where the forward-error bound of a certificate does not hold."""
        lo, hi = self.input_range
        if x.numel() == 0:
            return
        smallest, largest = (value.item() for value in torch.aminmax(x.detach()))
        if not (smallest >= lo and largest <= hi):  # NaN fails both
            raise ValueError(
                f"inputs to certify must lie in [{lo}, {hi}] (got values in [{float(x.min())}, {float(x.max())}]): "
                "the floating-point error bound covers that box; build the GloroNet with input_range= to change it"
            )

    def layer_bounds(self, sound: bool = False, fast: bool = False) -> list[torch.Tensor]:
        """Per-layer bounds of every layer but the last; power-iteration estimates advance only in training.
        `fast` (sound bounds only) takes convs' circulant bounds, still sound but a little looser."""
        if sound:
            return [bound.sound(layer, fast) for bound, layer in zip(self.bounds, self.layers)]
        iterations = self.power_iterations if self.training else 0
        return [bound.estimate(layer, iterations) for bound, layer in zip(self.bounds, self.layers)]

    def primitive_layers(self) -> list[nn.Module]:
        """The layers the certifiers reason about: `layers` with every block lowered (`gloro.layer_rules`)."""
        return primitives(self.layers)

    def primitive_bounds(self, fast: bool = False) -> list[torch.Tensor]:
        """Sound bounds of every primitive layer but the head, in the order of `primitive_layers`."""
        return [part for bound, layer in zip(self.bounds, self.layers) for part in bound.sound_parts(layer, fast)]

    def rounding_norms(self, fast: bool = False) -> list:
        """Sound bounds of every primitive layer but the head as the rounding model reads them (a residual
        layer's with its branch's: `gloro.layer_bounds.rounding_norms`)."""
        return [norm for bound, layer in zip(self.bounds, self.layers) for norm in rounding_norms(bound, layer, fast)]

    def sub_lipschitz(self, sound: bool = False) -> torch.Tensor:
        """K: the product of the bounds of all layers but the last (sound: each product rounded up)."""
        values = self.layer_bounds(sound)
        if sound:
            return torch.tensor(product_up(values), dtype=torch.float64, device=self.head.weight.device)
        # fixed constants (activations, pooling) enter as one number: fewer nodes for backward to walk
        values = [value for value, bound in zip(values, self.bounds) if not isinstance(bound, ConstantBound)]
        product = torch.tensor(self.constant_factor, dtype=self.head.weight.dtype, device=self.head.weight.device)
        for value in values:
            product = product * value
        return product

    def sound_constants(self, fresh: bool = False, fast: bool = False) -> SoundConstants:
        """K, K_ij and the forward-error offsets O_ij at the current weights: the frozen ones after `freeze()`
        (checked against the weights) unless `fresh`; `fast` computes fresh ones from `layer_bounds(fast=True)`."""
        if self.frozen and not fresh:
            self.check_not_stale()
            return self.frozen_constants
        if flatten_sequential(self.model) != self.layers:
            raise RuntimeError(
                "a layer of the model was replaced after the GloroNet was built, so its bounds are not this "
                "model's; wrap the model in a new GloroNet"
            )
        with torch.no_grad(), exact_arithmetic():
            norms = self.rounding_norms(fast)
            sub = product_up([norm.total if isinstance(norm, ResidualNorms) else norm for norm in norms])
            layers = self.primitive_layers()
            rounding = RoundingModel(layers, self.input_shape, norms, self.input_range, self.head.weight.dtype)
            error = box_error(rounding)
        margin_lipschitz = sound_margin_lipschitz(sub, self.head.weight)
        return SoundConstants(sub, margin_lipschitz, error.margin_offsets(rounding.distances), error, rounding)

    def lipschitz_constant(self, sound: bool = True) -> torch.Tensor:
        """The m×m matrix K_ij = K·‖w_i − w_j‖₂ (sound: float64, rounded up; else the training estimate)."""
        if sound:
            return self.sound_constants().margin_lipschitz
        return self.sub_lipschitz(sound) * head_distances(self.head.weight, exact=sound)

    def margin_offsets(self) -> torch.Tensor:
        """O_ij: what certification subtracts from each gap y_j − y_i for the rounding of the forward pass."""
        return self.sound_constants().offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The m+1 logits [y, y_⊥] at `self.epsilon` (after `freeze()`, y_⊥ includes the rounding offsets)."""
        self.check_input(x)
        if self.frozen:
            if self.training:
                raise RuntimeError("this GloroNet is frozen; call unfreeze() before training it")
            constants = self.sound_constants()
            return with_bottom(self.run_model(x), constants.margin_lipschitz, self.epsilon, constants.offsets)
        return with_bottom(self.run_model(x), self.lipschitz_constant(sound=False), self.epsilon)

    def predict_clean(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits y, without ⊥."""
        self.check_input(x)
        return self.run_model(x)

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """`self.model(x)`; with autograd off its ReLUs run in place (`gloro.inference`), same values."""
        return self.model(x) if torch.is_grad_enabled() else forward_in_place(self.model, x)

    def certify(self, x: torch.Tensor, epsilon: float | None = None) -> Certificate:
        """Predictions, the certified mask at ε (default `eval_epsilon`) and each point's certified radius.

        Uses sound constants (frozen ones after `freeze()`, otherwise computed on this call) and runs the
        forward pass in IEEE arithmetic whatever autocast or TF32 settings are on (`exact_arithmetic`).
        """
        radius = self.eval_epsilon if epsilon is None else check_epsilon(epsilon)
        self.check_domain(x)
        with torch.no_grad(), exact_arithmetic(self.head.weight.device.type):
            logits = self.predict_clean(x)
            # after the forward pass, which leaves the weights in cache for the check of frozen ones
            return self.sound_constants().certify(x, logits, radius)

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
        """Converge, compute the sound constants once, and switch to eval: inference is then one forward pass.

        A copy of the weights is kept: certifying after any of them changed raises instead of using stale K_ij.
        """
        self.converge(tol)
        self.eval()
        self.frozen_constants = None
        self.frozen_constants = self.sound_constants()
        self.frozen_weights = WeightSnapshot(self.layers)
        return self

    def check_not_stale(self) -> None:
        """Raise if a weight changed (values, dtype, device or shape) since `freeze()`."""
        same = self.frozen_weights is not None and self.frozen_weights.unchanged(flatten_sequential(self.model))
        if not same:
            raise RuntimeError(
                "the weights changed after freeze(): its K_ij no longer bound this net; call freeze() again"
            )

    def unfreeze(self) -> GloroNet:
        """Drop the frozen constants so that training can continue."""
        self.frozen_constants = None
        self.frozen_weights = None
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
    layers = primitives(layers)
    first = next((layer for layer in layers if role_of(layer) != "reshape"), None)
    if type(first) is nn.Linear and not any(isinstance(layer, nn.Conv2d | nn.AvgPool2d) for layer in layers):
        return (first.in_features,)
    raise ValueError("GloroNet needs input_shape=(C, H, W): convolutions are bounded at their real input size")
