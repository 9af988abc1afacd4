"""Local Lipschitz certification: per point, drop the ReLUs that stay off on the whole ε-ball, then certify.

The paper claims that a local bound cannot raise the best achievable VRA and that global certification is far
cheaper. This module is the local side of that comparison. For a point x0 and the ball B = {x : ‖x − x0‖₂ ≤ ε}:

1. Sound pre-activation bounds on B, layer by layer, in float64: interval bounds (IBP) intersected with the
   Lipschitz bound z_k(x0) ± ε·L·‖row_k‖₂, where L bounds the layer input's Lipschitz constant on B (for the first
   layer this is exactly the ℓ2-ball bound z0 ± ε‖w_k‖₂).
2. A ReLU unit whose pre-activation upper bound is below zero outputs 0 everywhere on B, so on B the network
   equals the network with that unit deleted: its row in the layer before and its column in the layer after are
   zeroed. Units that are always on or undecided keep their rows. MinMax units are never dropped (a MinMax output
   is zero on B only in corner cases not worth the bookkeeping), so MinMax networks get the global bound.
3. Each masked layer's spectral norm is bounded soundly: exactly (float64 eigenvalues of the Gram matrix of its
   explicit masked matrix, as the global bound does) when that matrix is small; otherwise, since a masked
   convolution is no longer a convolution, by the smallest of the unmasked sound bound, the Frobenius norm of the
   masked matrix and the Schur bound sqrt(‖M‖₁‖M‖_∞), each an upper bound on the spectral norm.
4. K^local_ij = Π_ℓ ‖M_ℓ‖ · ‖P(w_i − w_j)‖₂, with P the head-input mask, then capped elementwise by the global
   K_ij (both are sound, so their minimum is); hence K^local ≤ K by construction.

x0 is certified at ε iff min_{i≠j} (y_j − y_i)/K^local_ij ≥ ε. Since K^local holds on every smaller ball too,
min(that ratio, ε) is a sound certified radius. Bounds are computed in float64 from the float32 weights, and
each margin gives up the global certificate's rounding offsets O_ij, so that it holds for the float network too.

A second local certifier, CROWN from an ℓ2 ball (`certify_crown`), sits apart at the end of the module: it bounds
the margins directly rather than through a Lipschitz constant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro.certificate import Certificate
from gloro.eigen import gram_lower, largest_eigenvalues
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.layer_rules import layer_input_shapes, role_of
from gloro.layers import MinMax
from gloro.lipschitz import UnsupportedLayerError, conv_padding
from gloro.margin import radius_from_rows
from gloro.precision import exact_arithmetic

# A ReLU counts as off on the ball only when its pre-activation upper bound is below −OFF_TOLERANCE: a margin far
# above float64 rounding in these bound computations.
OFF_TOLERANCE = 1e-9
# CROWN widens each pre-activation bound by this many u per summed term, times the magnitude summed
CROWN_ROUNDING = 16 * torch.finfo(torch.float64).eps
# Masked operators whose explicit matrix has at most this many entries get an exact SVD; larger ones a fallback.
LOCAL_EXPLICIT_MAX_ENTRIES = 1 << 23
# Points per chunk of masked head differences are chosen so a chunk holds at most this many float64 entries (128 MiB).
CHUNK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class LocalBounds:
    """Local Lipschitz bounds on each point's ε-ball.

    margin_lipschitz: (N, m, m) float64 K^local_ij; layer_bounds: (N, affine layers before the head) masked norms;
    sub_lipschitz: (N,) their product; dropped_units: (N,) ReLU units proven off on the ball, of `relu_units`;
    pre_activation: (lower, upper) on the ball of every affine layer's output before the head, float64.
    """

    margin_lipschitz: torch.Tensor
    layer_bounds: torch.Tensor
    sub_lipschitz: torch.Tensor
    dropped_units: torch.Tensor
    relu_units: int
    pre_activation: tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True, eq=False)
class LocalCertificate(Certificate):
    """A local certificate at ε (a `Certificate` whose radius is the sound min(r, ε)), with the bounds it used."""

    bounds: LocalBounds | None = None


class AffineOperator:
    """One affine layer in float64: the map, its linear part, |A|, A∘A (entrywise), and its explicit matrix."""

    def __init__(self, layer: nn.Module, input_shape: Sequence[int], global_bound: torch.Tensor, max_entries: int):
        self.layer = layer
        self.input_shape = tuple(input_shape)
        self.global_bound = global_bound.double()
        kind = type(layer)
        if kind is nn.Linear:
            weight = layer.weight.detach().double()
            bias = None if layer.bias is None else layer.bias.detach().double()
            self.linear = lambda x: F.linear(x, weight)
            self.absolute = lambda x: F.linear(x, weight.abs())
            self.squared = lambda x: F.linear(x, weight.square())
            self.affine = lambda x: F.linear(x, weight, bias)
        elif kind is nn.Conv2d:
            weight = layer.weight.detach().double()
            bias = None if layer.bias is None else layer.bias.detach().double()
            stride, padding = _pair(layer.stride), conv_padding(layer)
            self.linear = lambda x: F.conv2d(x, weight, None, stride, padding)
            self.absolute = lambda x: F.conv2d(x, weight.abs(), None, stride, padding)
            self.squared = lambda x: F.conv2d(x, weight.square(), None, stride, padding)
            self.affine = lambda x: F.conv2d(x, weight, bias, stride, padding)
        else:  # nn.AvgPool2d: a conv with non-negative weights 1/k², so |A| = A and A∘A = A/k²
            area = math.prod(_pair(layer.kernel_size))
            self.linear = self.absolute = self.affine = layer
            self.squared = lambda x: layer(x) / area
        self.device = self.global_bound.device
        probe = torch.zeros((1, *self.input_shape), dtype=torch.float64, device=self.device)
        self.output_shape = tuple(self.linear(probe).shape[1:])
        self.matrix = self.gram = None
        if math.prod(self.input_shape) * math.prod(self.output_shape) <= max_entries:
            self.matrix = explicit_matrix(self.linear, self.input_shape, self.device)
            self.gram = side_gram(self.matrix)

    def column_sums(self, weights: torch.Tensor) -> torch.Tensor:
        """|A|ᵀ weights, the adjoint of `absolute` (via autograd, so convolutions need no output padding)."""
        with torch.enable_grad():
            probe = torch.zeros(
                (len(weights), *self.input_shape), dtype=torch.float64, device=self.device, requires_grad=True
            )
            (result,) = torch.autograd.grad(self.absolute(probe), probe, weights)
        return result

    def masked_norms(self, keep_in: torch.Tensor, keep_out: torch.Tensor) -> torch.Tensor:
        """Sound upper bounds on ‖diag(keep_out) A diag(keep_in)‖₂ for each point (never above the global bound)."""
        n = len(keep_in)
        rows, cols = keep_out.flatten(1).double(), keep_in.flatten(1).double()
        if self.matrix is not None:
            exact = masked_spectral_norms(self.matrix, self.gram, rows, cols)
            return torch.minimum(exact, self.global_bound.expand(n))
        # Fallback: Frobenius norm and the Schur test, both upper bounds on the spectral norm of the masked matrix
        row_squares = self.squared(keep_in.double()).flatten(1) * rows
        frobenius = row_squares.sum(1).sqrt()
        row_sums = (self.absolute(keep_in.double()).flatten(1) * rows).amax(1)
        col_sums = (self.column_sums(keep_out.double()).flatten(1) * cols).amax(1)
        schur = (row_sums * col_sums).sqrt()
        return torch.minimum(torch.minimum(frobenius, schur), self.global_bound.expand(n))


def side_gram(matrix: torch.Tensor) -> torch.Tensor:
    """A Aᵀ or AᵀA, whichever is smaller: the Gram whose largest eigenvalue is ‖A‖₂²."""
    return matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix


def masked_spectral_norms(
    matrix: torch.Tensor, gram: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """‖diag(r) A diag(c)‖₂ for each 0/1 row r and column c (float64); `gram` is `side_gram(matrix)`.

    The masked matrix's smaller Gram, restricted to its kept rows (or columns), has the same top eigenvalue.
    When fewer inner units are masked out than kept (most ReLUs on), it is `gram` minus their products, a
    low-rank update instead of a full product. Either way n·ε·‖gram‖_F is added to the top eigenvalue, far
    above its rounding (on the Fashion-MNIST 2C2F, about 1000× the largest difference between the two forms),
    so no norm is reported below the exact one.
    """
    by_rows = matrix.shape[0] <= matrix.shape[1]
    factor = matrix if by_rows else matrix.T  # the masked Gram is factor · diag(inner) · factorᵀ
    rounding = len(gram) * torch.finfo(gram.dtype).eps * torch.linalg.matrix_norm(gram)
    norms = []
    for outer, inner in zip(rows, cols) if by_rows else zip(cols, rows):
        dropped, kept, keep = (inner == 0).nonzero()[:, 0], inner.nonzero()[:, 0], outer.nonzero()[:, 0]
        if not len(keep) or not len(kept):
            norms.append(gram.new_zeros(()))  # the masked matrix is zero
            continue
        rows_kept = factor.index_select(0, keep)
        if len(dropped) < len(kept):
            base = gram.index_select(0, keep).index_select(1, keep)
            masked = gram_lower(rows_kept.index_select(1, dropped), minus_from=base)
        else:
            masked = gram_lower(rows_kept.index_select(1, kept))
        norms.append((largest_eigenvalues(masked) + rounding).clamp_min(0).sqrt())
    return torch.stack(norms)


def explicit_matrix(
    linear: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], device: torch.device | None = None
) -> torch.Tensor:
    """The (out × in) float64 matrix of a linear map on inputs of `input_shape`."""
    n_in = math.prod(input_shape)
    basis = torch.eye(n_in, dtype=torch.float64, device=device).view(n_in, *input_shape)
    return linear(basis).flatten(1).T.contiguous()


class LocalPlan:
    """What every point's local bound reuses: float64 operators, explicit matrices, global bounds and K_ij."""

    def __init__(self, net: GloroNet, max_entries: int = LOCAL_EXPLICIT_MAX_ENTRIES) -> None:
        self.net = net
        layers = net.primitive_layers()
        self.body = layers[:-1]
        shapes = layer_input_shapes(layers, net.input_shape)
        with torch.no_grad():
            global_bounds = net.primitive_bounds()
            constants = net.sound_constants(fresh=True)  # computed afresh from the weights, never a frozen copy
            self.global_margin_lipschitz = constants.margin_lipschitz
            self.offsets = constants.offsets
            self.constants = constants
        self.operators: dict[int, AffineOperator] = {}
        self.relu_units = 0
        for index, layer in enumerate(self.body):
            kind = type(layer)
            if role_of(layer) == "affine":
                self.operators[index] = AffineOperator(layer, shapes[index], global_bounds[index], max_entries)
            elif kind is nn.ReLU:
                self.relu_units += math.prod(shapes[index])
            elif kind is not MinMax and role_of(layer) != "reshape":
                raise UnsupportedLayerError(
                    f"local bounds know the activations ReLU and MinMax, not {kind.__name__} ({layer!r})"
                )
        # an affine layer's rows can be masked when a ReLU acts on its output directly (Identity aside)
        self.masks_rows = {}
        for index in self.operators:
            following = next((layer for layer in self.body[index + 1 :] if type(layer) is not nn.Identity), None)
            self.masks_rows[index] = type(following) is nn.ReLU


@torch.no_grad()
def local_lipschitz(net: GloroNet, x: torch.Tensor, epsilon: float, plan: LocalPlan | None = None) -> LocalBounds:
    """K^local_ij on B(x0, ε) for every point x0 in the batch `x` (sound; ≤ the global K_ij elementwise)."""
    epsilon = check_epsilon(epsilon)
    net.check_input(x)
    plan = LocalPlan(net) if plan is None else plan
    center = x.detach().to(net.head.weight.device).double()
    n = len(center)
    lower, upper = center - epsilon, center + epsilon
    zero = torch.zeros_like(center, dtype=torch.bool)  # units known to be 0 on the whole ball
    lipschitz = torch.ones(n, dtype=torch.float64, device=center.device)  # bound on the current layer's input
    layer_bounds, pre_activation = [], []
    dropped = torch.zeros(n, dtype=torch.int64, device=center.device)
    for index, layer in enumerate(plan.body):
        kind = type(layer)
        if role_of(layer) == "reshape":
            center, lower, upper, zero = layer(center), layer(lower), layer(upper), layer(zero)
        elif kind is nn.ReLU:
            zero = upper < -OFF_TOLERANCE
            dropped += zero.flatten(1).sum(1)
            center, lower, upper = center.clamp_min(0), lower.clamp_min(0), upper.clamp_min(0)
        elif kind is MinMax:  # monotone in each input, so it maps the box corners to the output box
            center, lower, upper = layer(center), layer(lower), layer(upper)
            zero = torch.zeros_like(center, dtype=torch.bool)
        else:
            operator = plan.operators[index]
            keep_in = ~zero
            scale = (epsilon * lipschitz).view(n, *[1] * len(operator.output_shape))
            lipschitz_radius = scale * operator.squared(keep_in.double()).clamp_min(0).sqrt()
            middle, radius = operator.affine((lower + upper) / 2), operator.absolute((upper - lower) / 2)
            center = operator.affine(center)
            lower = torch.maximum(middle - radius, center - lipschitz_radius)
            upper = torch.minimum(middle + radius, center + lipschitz_radius)
            pre_activation.append((lower, upper))
            keep_out = upper >= -OFF_TOLERANCE if plan.masks_rows[index] else torch.ones_like(center, dtype=torch.bool)
            norms = operator.masked_norms(keep_in, keep_out)
            layer_bounds.append(norms)
            lipschitz = lipschitz * norms
            zero = torch.zeros_like(center, dtype=torch.bool)
    if zero.dim() != 2:
        raise ValueError(f"the head expects flat features, got a body output of shape {tuple(zero.shape[1:])}")
    margin = lipschitz[:, None, None] * masked_head_distances(net.head.weight, ~zero)
    margin = torch.minimum(margin, plan.global_margin_lipschitz.to(margin.device))
    layer_tensor = torch.stack(layer_bounds, 1) if layer_bounds else torch.ones((n, 0), dtype=torch.float64)
    return LocalBounds(margin, layer_tensor, lipschitz, dropped, plan.relu_units, tuple(pre_activation))


def masked_head_distances(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """‖P(w_i − w_j)‖₂ per point, P zeroing the head inputs known to be 0 on the ball (exact differences)."""
    w = weight.detach().double()
    differences = w[:, None, :] - w[None, :, :]
    per_chunk = max(1, CHUNK_ENTRIES // differences.numel())
    return torch.cat(
        [
            torch.linalg.vector_norm(differences[None] * k.double()[:, None, None, :], dim=-1)
            for k in keep.split(per_chunk)
        ]
    )


@torch.no_grad()
@exact_arithmetic()
def certify_local(
    net: GloroNet, x: torch.Tensor, epsilon: float | None = None, plan: LocalPlan | None = None
) -> LocalCertificate:
    """Certify each point of `x` at ε (default the net's eval ε) with its local bound K^local_ij."""
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    net.check_domain(x)
    plan = LocalPlan(net) if plan is None else plan
    bounds = local_lipschitz(net, x, epsilon, plan)
    logits = net.predict_clean(x.to(net.head.weight.device)).detach()
    top = logits.argmax(dim=1)
    logits = logits.double()
    local = bounds.margin_lipschitz[torch.arange(len(top), device=top.device), top]
    # a zero K^local_ij (the margin is constant on the ball) with a non-negative gap certifies: r = ∞
    ratios = radius_from_rows(logits, local, plan.offsets.to(logits.device)[top])
    # where the box-wide offsets decide, each point's own over B(x, ε) (`SoundConstants.proven_radius`)
    band = ((ratios < epsilon) & (radius_from_rows(logits, local, torch.zeros_like(local)) >= epsilon)).cpu()
    if band.any():
        rows = band.nonzero().flatten()
        ball = torch.full((len(rows),), float(epsilon), dtype=torch.float64)
        chosen = rows.to(logits.device)
        own = plan.constants.proven_radius(x[rows.to(x.device)].cpu(), logits[chosen].cpu(), ball, local[chosen])
        ratios[chosen] = torch.maximum(ratios[chosen], own.to(ratios.device))
    return LocalCertificate(top, ratios >= epsilon, ratios.clamp_max(epsilon), epsilon, "local", bounds=bounds)


# --- A second local certifier, kept apart from the Lipschitz one: CROWN from an ℓ2 ball -------------------------
#
# CROWN (Zhang et al., NeurIPS 2018) bounds each neuron by a linear function of the input, carried back through the
# network with one linear lower and upper relaxation per undecided ReLU (upper: the chord u(z − l)/(u − l); lower:
# z when u ≥ −l, else 0), and minimises it over the ℓ2 ball in closed form: min_{‖x−x0‖≤ε} λᵀx = λᵀx0 − ε‖λ‖₂.
# Pre-activation bounds are the tighter of CROWN's and the Lipschitz walk's (both sound); the margins y_j − y_i are
# bounded last. It works on explicit float64 matrices, so every affine layer must be small enough to have one.


@dataclass(frozen=True, eq=False)
class CrownCertificate(Certificate):
    """CROWN at ε (a `Certificate` without radii), with the (N, m) lower bounds of y_j − y_i on the ball (+∞ at
    j) and the flattened (lower, upper) pre-activation bounds of every affine layer before the head."""

    margin_lower_bounds: torch.Tensor | None = None
    pre_activation: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


def crown_layers(plan: LocalPlan) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """(W, b, relu_after) for every affine layer, the head last; raises for what CROWN here does not model."""
    steps: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    for index, layer in enumerate(plan.body):
        kind = type(layer)
        if role_of(layer) == "reshape":
            continue
        if kind is MinMax:
            raise UnsupportedLayerError("the CROWN certifier here relaxes ReLU only; MinMax networks are not supported")
        if kind is nn.ReLU:
            if not steps:
                raise UnsupportedLayerError("the CROWN certifier here needs an affine layer before the first ReLU")
            weight, bias, _ = steps[-1]
            steps[-1] = (weight, bias, True)
            continue
        operator = plan.operators[index]
        if operator.matrix is None:
            raise ValueError(f"{layer!r} is too large for an explicit matrix; CROWN here needs one per layer")
        zero = torch.zeros((1, *operator.input_shape), dtype=torch.float64, device=operator.matrix.device)
        steps.append((operator.matrix, operator.affine(zero).flatten(), False))
    head = plan.net.head
    bias = torch.zeros(head.out_features, dtype=torch.float64) if head.bias is None else head.bias.detach().double()
    steps.append((head.weight.detach().double(), bias.to(head.weight.device), False))
    return steps


def relu_relaxation(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit: lower slope α, upper slope s and upper intercept t, with αz ≤ relu(z) ≤ sz + t on [l, u]."""
    off, on = upper <= 0, lower >= 0
    width = (upper - lower).clamp_min(torch.finfo(torch.float64).tiny)
    slope = torch.where(on, 1.0, torch.where(off, 0.0, upper / width))
    intercept = torch.where(on | off, 0.0, -slope * lower)
    lower_slope = torch.where(on, 1.0, torch.where(off | (upper < -lower), 0.0, 1.0))
    return lower_slope, slope, intercept


def crown_tolerance(
    weight: torch.Tensor, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, magnitude: torch.Tensor
) -> torch.Tensor:
    """How far float64 rounding can have moved a unit's pre-activation bounds: a multiple of u·n times the
    scale of what was summed (|W| times the input magnitude, the bias, the bounds themselves)."""
    scale = weight.abs().sum(1) * magnitude[:, None] + bias.abs() + lower.abs() + upper.abs()
    return CROWN_ROUNDING * weight.shape[1] * scale


def back_substitute(
    coefficients: torch.Tensor,
    steps: list[tuple[torch.Tensor, torch.Tensor, bool]],
    bounds: list[tuple[torch.Tensor, torch.Tensor]],
    center: torch.Tensor,
    epsilon: float,
    upper: bool,
) -> torch.Tensor:
    """Bound Λ·h_k over the ball, h_k the output of affine step k = len(bounds) − 1 (after its ReLU if any).

    `coefficients` is (N, rows, width of h_k); `bounds[m]` the pre-activation bounds of step m. Returns (N, rows)
    lower bounds, or upper bounds when `upper` (computed as −lower bound of −Λ).
    """
    sign = -1.0 if upper else 1.0
    lam = sign * coefficients
    constant = torch.zeros(lam.shape[:2], dtype=torch.float64, device=lam.device)
    for m in range(len(bounds) - 1, -1, -1):
        weight, bias, relu_after = steps[m]
        if relu_after:  # a lower bound takes the lower relaxation where λ > 0 and the upper one where λ < 0
            alpha, slope, intercept = relu_relaxation(*bounds[m])
            positive, negative = lam.clamp_min(0), lam.clamp_max(0)
            constant = constant + (negative * intercept[:, None, :]).sum(-1)
            lam = positive * alpha[:, None, :] + negative * slope[:, None, :]
        constant = constant + lam @ bias
        lam = lam @ weight
    value = (lam @ center[:, :, None])[..., 0] + constant - epsilon * torch.linalg.vector_norm(lam, dim=-1)
    return sign * value


@torch.no_grad()
@exact_arithmetic()
def certify_crown(
    net: GloroNet, x: torch.Tensor, epsilon: float | None = None, plan: LocalPlan | None = None
) -> CrownCertificate:
    """Certify each point at ε with CROWN: certified iff every margin y_j − y_i has a positive lower bound."""
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    net.check_domain(x)
    plan = LocalPlan(net) if plan is None else plan
    steps = crown_layers(plan)
    x = x.to(net.head.weight.device)
    lipschitz_bounds = local_lipschitz(net, x, epsilon, plan).pre_activation
    center = x.detach().double().flatten(1)
    n = len(center)
    bounds: list[tuple[torch.Tensor, torch.Tensor]] = []
    previous = center.abs().amax(1)  # a bound on the magnitude of each layer's inputs
    for k, (weight, bias, _) in enumerate(steps[:-1]):
        if k == 0:  # the first layer's exact bounds on the ball
            z = center @ weight.T + bias
            radius = epsilon * torch.linalg.vector_norm(weight, dim=1)
            lower, upper = z - radius, z + radius
        else:
            coefficients = weight.expand(n, *weight.shape)
            lower = back_substitute(coefficients, steps[:k], bounds, center, epsilon, upper=False) + bias
            upper = back_substitute(coefficients, steps[:k], bounds, center, epsilon, upper=True) + bias
        known_lower, known_upper = lipschitz_bounds[k]
        lower, upper = torch.maximum(lower, known_lower.flatten(1)), torch.minimum(upper, known_upper.flatten(1))
        # widened by what float64 rounding of the bounds can have moved them, so that no ReLU is taken for
        # off (or on) because its bound was rounded across 0
        tolerance = crown_tolerance(weight, bias, lower, upper, previous)
        bounds.append((lower - tolerance, upper + tolerance))
        previous = torch.maximum(lower.abs(), upper.abs()).amax(1)
    clean = net.predict_clean(x).detach()
    predictions = clean.argmax(1)
    head_weight, head_bias, _ = steps[-1]
    specification = head_weight[predictions][:, None, :] - head_weight[None, :, :]  # rows w_j − w_i
    specification_bias = head_bias[predictions][:, None] - head_bias[None, :]
    margins = back_substitute(specification, steps[:-1], bounds, center, epsilon, upper=False) + specification_bias
    margins = margins.scatter(1, predictions[:, None], math.inf)
    # the float net's margin at any point of the ball is within O_ij / 2 of the exact one, or the ball's own bound
    certified = plan.constants.certified_over_ball(x, clean, margins, epsilon)
    return CrownCertificate(
        predictions, certified, None, epsilon, "crown", margin_lower_bounds=margins, pre_activation=tuple(bounds)
    )


@exact_arithmetic()
def compare_local_global(
    net: GloroNet,
    x: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | None = None,
    *,
    batch_size: int = 64,
    crown: bool = False,
) -> dict:
    """Certify the same points with the global K_ij and the local K^local_ij; a JSON-serialisable report.

    With `crown=True` the CROWN certifier runs too, and its results sit under the keys that start with `crown_`.

    Times are wall-clock seconds per point. Each method's one-off work (the sound K_ij for the global
    certificate; the float64 operators and explicit matrices for the local one) is spread over all points; each
    batch's own work (a forward pass; bound propagation, SVDs and a forward pass) over the batch's points.
    """
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0 or len(labels) != n:
        raise ValueError(f"need a non-empty batch with one label per point, got {n} points and {len(labels)} labels")
    was_training = net.training
    net.eval()
    with torch.no_grad():
        start = time.perf_counter()
        constants = net.sound_constants(fresh=True)  # computed afresh, never a frozen copy
        sub_lipschitz = constants.sub_lipschitz
        global_setup = time.perf_counter() - start
        global_parts, global_seconds = [], []
        for batch in x.split(batch_size):
            start = time.perf_counter()
            global_parts.append(constants.certify(batch, net.predict_clean(batch), epsilon))
            global_seconds += [(time.perf_counter() - start) / len(batch)] * len(batch)
        start = time.perf_counter()
        plan = LocalPlan(net)
        local_setup = time.perf_counter() - start
        local_parts, local_seconds = [], []
        for batch in x.split(batch_size):
            start = time.perf_counter()
            local_parts.append(certify_local(net, batch, epsilon, plan))
            local_seconds += [(time.perf_counter() - start) / len(batch)] * len(batch)
        crown_parts, crown_seconds = [], []
        for batch in x.split(batch_size) if crown else ():
            start = time.perf_counter()
            crown_parts.append(certify_crown(net, batch, epsilon, plan))
            crown_seconds += [(time.perf_counter() - start) / len(batch)] * len(batch)
    net.train(was_training)

    def gather(parts, name):
        return torch.cat([getattr(part, name) for part in parts]).cpu()

    predictions = gather(global_parts, "predictions")
    certified_global, certified_local = gather(global_parts, "certified"), gather(local_parts, "certified")
    radius_global, radius_local = gather(global_parts, "radius"), gather(local_parts, "radius")
    local_sub = torch.cat([part.bounds.sub_lipschitz for part in local_parts]).cpu()
    dropped = torch.cat([part.bounds.dropped_units for part in local_parts]).cpu()
    correct = predictions == labels.cpu()
    seconds_global = [s + global_setup / n for s in global_seconds]
    seconds_local = [s + local_setup / n for s in local_seconds]
    if crown:
        certified_crown = gather(crown_parts, "certified")
        seconds_crown = [s + local_setup / n for s in crown_seconds]
    points = [
        {
            "index": i,
            "label": int(labels[i]),
            "prediction": int(predictions[i]),
            "certified_global": bool(certified_global[i]),
            "certified_local": bool(certified_local[i]),
            "radius_global": float(radius_global[i]),
            "radius_local": float(radius_local[i]),
            "sub_lipschitz_local": float(local_sub[i]),
            "dropped_units": int(dropped[i]),
            "seconds_global": seconds_global[i],
            "seconds_local": seconds_local[i],
        }
        | ({"certified_crown": bool(certified_crown[i]), "seconds_crown": seconds_crown[i]} if crown else {})
        for i in range(n)
    ]
    report = {
        "epsilon": epsilon,
        "num_points": n,
        "clean_accuracy": correct.double().mean().item(),
        "vra_global": (correct & certified_global).double().mean().item(),
        "vra_local": (correct & certified_local).double().mean().item(),
        "certified_global": int(certified_global.sum()),
        "certified_local": int(certified_local.sum()),
        "certified_local_only": int((certified_local & ~certified_global).sum()),
        "certified_global_only": int((certified_global & ~certified_local).sum()),
        "sub_lipschitz_global": float(sub_lipschitz),
        "sub_lipschitz_local_mean": float(local_sub.mean()),
        "relu_units": plan.relu_units,
        "dropped_units_mean": float(dropped.double().mean()),
        "global_setup_seconds": global_setup,
        "local_setup_seconds": local_setup,
        "seconds_per_point_global": sum(seconds_global) / n,
        "seconds_per_point_local": sum(seconds_local) / n,
        "batch_size": batch_size,
    }
    if crown:
        report |= {
            "crown_vra": (correct & certified_crown).double().mean().item(),
            "crown_certified": int(certified_crown.sum()),
            "crown_certified_not_global": int((certified_crown & ~certified_global).sum()),
            "crown_global_not_certified": int((certified_global & ~certified_crown).sum()),
            "crown_seconds_per_point": sum(seconds_crown) / n,
        }
    return report | {"points": points}
