"""Per-layer ℓ2 Lipschitz bounds: power-iteration estimates for training, sound upper bounds for certificates.

Power iteration approaches a spectral norm from below, so it is what training uses (cheap, differentiable,
its iterate kept as a buffer so it persists across steps and in checkpoints) but never what a certificate
rests on. The sound bound is the spectral norm proven from above (`gloro.outward`) of the Linear weight or, for
Conv2d and AvgPool2d, of the explicit operator at the layer's real input shape (when small), else the
polyphase circulant bound of `conv2d_circulant_bound`, which is never below the true norm.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro import native, power_path
from gloro.outward import U64, gamma, norm_up, spectral_norm_upper, up

# Explicit operators up to this many entries (in x out) are bounded by an exact eigen-decomposition.
EXPLICIT_OPERATOR_MAX_ENTRIES = 1 << 24
# Conv power iteration runs as im2col matrix products when the column matrix has at most this many entries.
IM2COL_MAX_ENTRIES = 1 << 15
# Power iteration rescales its iterate once every this many steps. The weight is first divided by its
# Frobenius norm, so A's norm lies between about 1/(stride·√channels) and √(outputs reading one pixel) (at
# most the kernel area): over five steps the iterate moves within float32's range, far from under/overflow.
RESCALE_EVERY = 5
MEASURED_STEPS = 10  # the advance each path is timed on when `power_path` chooses one


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on `device` for the enclosed ops; nothing to enter when it is off already."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class UnsupportedLayerError(TypeError):
    """A layer for which no Lipschitz bound is known: counting it as 1 would make certificates unsound."""


class LayerBound(nn.Module):
    """Lipschitz bound of one layer; `layer` is passed in so the bound never owns the layer's weights."""

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        """Training-time value, differentiable in the layer's weights; advances any iterate `iterations` steps."""
        raise NotImplementedError

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        """A guaranteed upper bound on the layer's ℓ2 Lipschitz constant, as a float64 scalar; `fast` may trade
        a little tightness for time (a conv's circulant bound instead of its explicit matrix)."""
        raise NotImplementedError

    def sound_parts(self, layer: nn.Module, fast: bool = False) -> list[torch.Tensor]:
        """`sound` per primitive layer that `layer` computes through: one for a primitive, more for a block."""
        return [self.sound(layer, fast)]


class ConstantBound(LayerBound):
    """A layer with a fixed, exactly known Lipschitz constant (activations, reshapes, average pooling)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.sound_value = float(value)  # kept in double precision: a float32 copy may round below it
        self.register_buffer("value", torch.tensor(self.sound_value), persistent=False)

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        return self.value

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        return torch.tensor(self.sound_value, dtype=torch.float64, device=self.value.device)


class PowerIterationBound(LayerBound):
    """Power iteration on AᵀA for a linear operator A, with a persistent iterate of A's input shape."""

    def __init__(self, input_shape: Sequence[int], generator: torch.Generator | None) -> None:
        super().__init__()
        start = torch.randn((1, *input_shape), generator=generator)
        self.register_buffer("iterate", start / start.norm())
        self.sound_cache: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}  # fast → (weight then, bound)

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        """See `LayerBound.sound`. Kept until the weight's values change (an SVD of a large conv takes seconds);
        the weight is compared exactly with a copy, so no way of editing it in place can leave a stale bound."""
        weight = layer.weight.detach()
        if fast in self.sound_cache:
            seen, bound = self.sound_cache[fast]
            same = seen.dtype == weight.dtype and seen.device == weight.device and seen.shape == weight.shape
            if same and torch.equal(seen, weight):
                return bound.clone()
        bound = self.sound_bound(weight, fast)
        self.sound_cache[fast] = (weight.clone(), bound)
        return bound.clone()

    def sound_bound(self, weight: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """The sound bound at this weight, computed afresh."""
        raise NotImplementedError

    def operator(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A x."""
        raise NotImplementedError

    def paths(self, weight: torch.Tensor) -> tuple[str, ...]:
        """The code paths that can advance this operator's iterate for `weight` (see `gloro.power_path`)."""
        raise NotImplementedError

    def signature(self, weight: torch.Tensor) -> str:
        """What the speed of a path depends on besides the machine: the operator, and the weight's form."""
        layout = "contiguous" if weight.is_contiguous() else "strided"
        return f"{type(self).__name__} {tuple(weight.shape)} {weight.dtype} {weight.device.type} {layout}"

    def path_for(self, weight: torch.Tensor) -> str:
        """The fastest path on this machine for this operator (measured once per machine; see `power_path`)."""
        paths = self.paths(weight)
        if len(paths) == 1:
            return paths[0]
        start: list[torch.Tensor] = []  # the iterate before any trial, copied only if a trial runs

        def trial(path: str):
            def run() -> None:  # a timed advance that leaves the iterate as it found it
                start[:] = start or [self.iterate.clone()]
                self.advance(weight, MEASURED_STEPS, path)
                self.iterate.copy_(start[0])

            return run

        return power_path.choose(self.signature(weight), {path: trial(path) for path in paths}, weight.device)

    @torch.no_grad()
    def advance(self, weight: torch.Tensor, iterations: int, path: str | None = None) -> torch.Tensor | None:
        """Move the stored iterate `iterations` steps of x ← AᵀAx / ‖AᵀAx‖ (no host sync inside the loop).

        Every path computes the same iterates up to rounding; `path` names one (see `paths`), by default the
        fastest on this machine. The compiled loop of `gloro.native` does the whole advance in one call and,
        for a conv, also returns the gradient of ‖Ax‖ in the weight at the new x (else None). The PyTorch
        paths divide the weight by its Frobenius norm once, as the compiled loop does, and rescale the iterate
        only every `RESCALE_EVERY` steps: the same iterates, with fewer small kernels.
        """
        if path is None:
            path = self.path_for(weight)
        elif path not in self.paths(weight):
            raise ValueError(
                f"{type(self).__name__} has no power-iteration path {path!r} here; it has {self.paths(weight)}"
            )
        if path == "compiled":
            return self.advance_natively(weight, iterations)
        weight = weight / torch.linalg.vector_norm(weight)  # a zero weight gives NaN here; see keep_direction
        self.keep_direction(self.steps(path, weight, iterations))
        return None

    def advance_natively(self, weight: torch.Tensor, iterations: int) -> torch.Tensor | None:
        """`advance` through the compiled loop."""
        raise NotImplementedError

    def steps(self, path: str, weight: torch.Tensor, iterations: int) -> torch.Tensor:
        """x ← AᵀAx `iterations` times from the stored iterate by a PyTorch path, for a weight of Frobenius
        norm 1; the last x."""
        raise NotImplementedError

    def keep_direction(self, x: torch.Tensor) -> None:
        """Store x as the unit iterate, unless it has no finite direction (a zero operator): keep the old one."""
        norm = torch.linalg.vector_norm(x)  # NaN or 0 without one; never inf, as the weight is scaled
        self.iterate.copy_(torch.where(norm > 0, (x / norm).view_as(self.iterate), self.iterate))

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        """σ ≈ ‖A x‖ at the unit iterate x; its gradient is u xᵀ, the spectral norm's gradient at convergence.

        Runs in the weight's precision even under autocast: a half-precision K would be off in its third digit.
        """
        with full_precision(layer.weight.device):
            gradient = self.advance(layer.weight.detach(), iterations) if iterations else None
            if gradient is not None:  # u xᵀ: Σ W ⊙ u xᵀ = uᵀAx = ‖Ax‖, with the same gradient, in two small ops
                return torch.sum(layer.weight * gradient)
            return torch.linalg.vector_norm(self.operator(self.iterate, layer.weight))


class LinearBound(PowerIterationBound):
    """nn.Linear: A = W (the bias does not change the Lipschitz constant)."""

    def __init__(self, layer: nn.Linear, generator: torch.Generator | None) -> None:
        super().__init__((layer.in_features,), generator)

    def operator(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)

    def paths(self, weight: torch.Tensor) -> tuple[str, ...]:
        return ("compiled", "matmul") if native.runs(weight, self.iterate) else ("matmul",)

    def steps(self, path: str, weight: torch.Tensor, iterations: int) -> torch.Tensor:
        """See `PowerIterationBound.steps` ("matmul"); both products of a step go into buffers made once."""
        x = self.iterate.clone()
        y = x.new_empty(1, len(weight))
        transposed = weight.T
        for step in range(1, iterations + 1):
            torch.mm(torch.mm(x, transposed, out=y), weight, out=x)
            if step % RESCALE_EVERY == 0:
                x.div_(torch.linalg.vector_norm(x))
        return x

    def advance_natively(self, weight: torch.Tensor, iterations: int) -> None:
        """See `PowerIterationBound.advance`; no gradient: for a wide W, u xᵀ costs more than Wx again."""
        native.linear_advance(self.iterate, weight, iterations, RESCALE_EVERY)

    def sound_bound(self, weight: torch.Tensor, fast: bool = False) -> torch.Tensor:
        return torch.tensor(spectral_norm_upper(weight.cpu()), dtype=torch.float64, device=weight.device)


class Conv2dBound(PowerIterationBound):
    """nn.Conv2d as the padded, strided operator at the layer's real input shape (C, H, W).

    Small operators iterate as matrix products on gathered columns (im2col, and its adjoint as a gather
    and a sum), which at batch 1 cost a fraction of a conv2d + conv_transpose2d dispatch; larger ones use
    the convolutions themselves.
    """

    def __init__(self, layer: nn.Conv2d, input_shape: Sequence[int], generator: torch.Generator | None) -> None:
        check_plain_conv(layer)
        super().__init__(input_shape, generator)
        self.input_shape = tuple(input_shape)
        self.kernel_size = _pair(layer.kernel_size)
        self.stride = _pair(layer.stride)
        self.padding = conv_padding(layer)
        out_hw = conv_output_hw(self.input_shape[1:], self.kernel_size, self.stride, self.padding)
        self.output_padding = tuple(
            size - ((out - 1) * s - 2 * p + k)
            for size, out, s, p, k in zip(self.input_shape[1:], out_hw, self.stride, self.padding, self.kernel_size)
        )
        self.as_matrix = layer.weight[0].numel() * math.prod(out_hw) <= IM2COL_MAX_ENTRIES
        # with no more patch entries than output channels, one product with WᵀW replaces two per step
        self.through_gram = layer.weight[0].numel() <= layer.out_channels
        if self.as_matrix:  # index buffers follow the module across devices, but stay out of checkpoints
            columns, fold = im2col_indices(self.input_shape, self.kernel_size, self.stride, self.padding)
            self.register_buffer("column_index", columns, persistent=False)
            self.register_buffer("fold_index", fold, persistent=False)
            native_columns, native_fold = native.native_indices(columns, fold)
            self.register_buffer("native_columns", native_columns, persistent=False)
            self.register_buffer("native_fold", native_fold, persistent=False)

    def operator(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.as_matrix:
            return weight.flatten(1) @ F.pad(x.flatten(), (0, 1)).take(self.column_index)
        return F.conv2d(x, weight, None, self.stride, self.padding)

    def paths(self, weight: torch.Tensor) -> tuple[str, ...]:
        if not self.as_matrix:
            return ("convolutions",)
        compiled = ("compiled",) if native.runs(weight, self.iterate) else ()
        return (*compiled, "columns", "convolutions")

    def signature(self, weight: torch.Tensor) -> str:
        return f"{super().signature(weight)} input={self.input_shape} stride={self.stride} padding={self.padding}"

    def advance_natively(self, weight: torch.Tensor, iterations: int) -> torch.Tensor | None:
        return native.conv_advance(
            self.iterate, weight, self.native_columns, self.native_fold, self.through_gram, iterations, RESCALE_EVERY
        )

    def steps(self, path: str, weight: torch.Tensor, iterations: int) -> torch.Tensor:
        """See `PowerIterationBound.steps`: "columns" (only where the gathers were built) or "convolutions"."""
        if path == "columns":
            return self.steps_by_columns(weight, iterations)
        if path == "convolutions":
            return self.steps_by_convolutions(weight, iterations)
        raise ValueError(f"no PyTorch power-iteration path {path!r} for a conv; it has {self.paths(weight)}")

    def steps_by_columns(self, weight: torch.Tensor, iterations: int) -> torch.Tensor:
        """Every step writes into buffers made once (the iterate and the columns each with a zero appended for
        the padding): a gather, one or two small products, and a gather summed into the iterate."""
        matrix = weight.reshape(len(weight), -1)  # one copy if channels_last
        transposed = matrix.T
        gram = transposed @ matrix if self.through_gram else None
        column_shape, fold_shape = self.column_index.shape, self.fold_index.shape
        columns_at, fold_at = self.column_index.view(-1), self.fold_index.view(-1)
        x = F.pad(self.iterate.flatten(), (0, 1))
        columns = x.new_zeros(len(columns_at) + 1)
        body, column_body = x[:-1], columns[:-1].view(column_shape)
        gathered, folded = x.new_empty(len(columns_at)), x.new_empty(len(fold_at))
        gathered_matrix, folded_matrix = gathered.view(column_shape), folded.view(fold_shape)
        outputs = x.new_empty(len(matrix), column_shape[1])
        for step in range(1, iterations + 1):
            torch.index_select(x, 0, columns_at, out=gathered)
            if gram is None:
                torch.mm(transposed, torch.mm(matrix, gathered_matrix, out=outputs), out=column_body)
            else:
                torch.mm(gram, gathered_matrix, out=column_body)
            torch.index_select(columns, 0, fold_at, out=folded)
            torch.sum(folded_matrix, 0, out=body)
            if step % RESCALE_EVERY == 0:
                body.div_(torch.linalg.vector_norm(body))
        return body

    def steps_by_convolutions(self, weight: torch.Tensor, iterations: int) -> torch.Tensor:
        """Each step is a conv2d and its exact adjoint, conv_transpose2d with the output padding of the shape."""
        x = self.iterate
        for step in range(1, iterations + 1):
            y = F.conv2d(x, weight, None, self.stride, self.padding)
            x = F.conv_transpose2d(y, weight, None, self.stride, self.padding, self.output_padding)
            if step % RESCALE_EVERY == 0:
                x = x / torch.linalg.vector_norm(x)
        return x

    def sound_bound(self, weight: torch.Tensor, fast: bool = False) -> torch.Tensor:
        return conv2d_sound_norm(weight, self.input_shape, self.stride, self.padding, explicit=not fast)


def im2col_indices(
    input_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of a conv's im2col and of its adjoint, for a flattened input with one zero appended.

    `columns` (C·kh·kw, L): input position of each column entry (n, the appended zero, for padding).
    `fold` (r, n): for each input position, the column entries that read it, padded with the index of a
    zero appended to the flattened columns; summing the gathered rows gives the adjoint (col2im).
    """
    n = math.prod(input_shape)
    positions = torch.arange(1, n + 1, dtype=torch.float64).view(1, *input_shape)  # exact below 2^53
    columns = F.unfold(positions, tuple(kernel), padding=tuple(padding), stride=tuple(stride))[0].long() - 1
    columns[columns < 0] = n
    flat = columns.flatten()
    order = torch.argsort(flat, stable=True)
    targets = flat[order]
    inside = targets < n
    order, targets = order[inside], targets[inside]
    counts = torch.bincount(targets, minlength=n)
    rank = torch.arange(len(targets)) - (torch.cumsum(counts, 0) - counts)[targets]
    fold = torch.full((max(int(counts.max()), 1), n), len(flat), dtype=torch.long)
    fold[rank, targets] = order
    return columns, fold


def check_plain_conv(layer: nn.Conv2d) -> None:
    """Reject Conv2d options whose operator the bounds here do not model."""
    if layer.groups != 1 or _pair(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"{layer!r}: Lipschitz bounds support Conv2d with groups=1, dilation=1 and padding_mode='zeros' "
            "only; rebuild the layer with those settings"
        )


def conv_padding(layer: nn.Conv2d) -> tuple[int, int]:
    """The layer's symmetric zero padding as integers ('valid' is 0; 'same' needs odd kernels)."""
    if layer.padding == "valid":
        return (0, 0)
    if layer.padding == "same":
        if any(k % 2 == 0 for k in layer.kernel_size):
            raise UnsupportedLayerError(
                f"{layer!r}: padding='same' with an even kernel pads asymmetrically; pass integer padding instead"
            )
        return tuple(k // 2 for k in layer.kernel_size)
    return _pair(layer.padding)


def conv_output_hw(
    input_hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> tuple[int, ...]:
    """Spatial output size of a zero-padded, strided convolution."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(input_hw, kernel, stride, padding))


def explicit_conv_matrix(
    weight: torch.Tensor, input_shape: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> torch.Tensor:
    """The conv's matrix at input shape (C, H, W), (C_out·L) × (C·H·W), by placing each weight where im2col
    reads it: every entry is a weight or zero, exactly, whatever convolution kernel the device would use."""
    w = weight.detach().double().cpu()
    columns, _ = im2col_indices(input_shape, w.shape[2:], stride, padding)  # (C·kh·kw, L), n for padding
    n, (patch, positions) = math.prod(input_shape), columns.shape
    matrix = torch.zeros(len(w), positions, n + 1, dtype=torch.float64)
    values = w.reshape(len(w), 1, patch).expand(len(w), positions, patch)
    matrix.scatter_(2, columns.t().reshape(1, positions, patch).expand(len(w), -1, -1), values)
    return matrix[..., :n].reshape(len(w) * positions, n)


def conv2d_circulant_bound(
    weight: torch.Tensor, input_hw: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> torch.Tensor:
    """Upper bound on a zero-padded, strided conv's ℓ2 norm via a circular conv on its polyphase form.

    A stride-s conv equals a stride-1 conv on the space-to-depth (polyphase) input with C·s² channels; the
    zero-padded input embeds isometrically into an N×N torus large enough that no nonzero tap wraps, so the
    conv is a restriction of a circular conv, whose norm is max over DFT frequencies of σ_max(K̂(ω)). The
    transforms are taken directly (a few taps each), so their rounding can be bounded and added.
    """
    w = weight.detach().double().cpu()
    out_ch, in_ch, kh, kw = w.shape
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    taps_h, taps_w = math.ceil(kh / sh), math.ceil(kw / sw)
    w = F.pad(w, (0, taps_w * sw - kw, 0, taps_h * sh - kh))
    w = w.view(out_ch, in_ch, taps_h, sh, taps_w, sw).permute(0, 1, 3, 5, 2, 4)
    w = w.reshape(out_ch, in_ch * sh * sw, taps_h * taps_w)
    n_h = max(math.ceil((input_hw[0] + 2 * ph) / sh), taps_h)
    n_w = max(math.ceil((input_hw[1] + 2 * pw) / sw), taps_w)
    taps = torch.cartesian_prod(torch.arange(taps_h), torch.arange(taps_w))
    frequencies = torch.cartesian_prod(torch.arange(n_h), torch.arange(n_w))
    # the phase as an exact integer fraction of a full turn, so the only rounding is in the angle and cos/sin
    turns = frequencies[:, None, 0] * taps[None, :, 0] * n_w + frequencies[:, None, 1] * taps[None, :, 1] * n_h
    angle = (turns % (n_h * n_w)).double() * (2 * math.pi / (n_h * n_w))
    twiddle = torch.polar(torch.ones_like(angle), -angle)  # (frequencies, taps)
    # each twiddle within 64u of e^{-iθ} (angle and cos/sin, a few ulps each); then a T-term complex sum
    per_weight = 2 * gamma(2 * taps.shape[0] + 4, U64) + 64 * U64
    entry_error = up(per_weight * norm_up(w.abs().sum(-1)))
    matrix = w.reshape(out_ch * w.shape[1], -1).to(torch.complex128)
    bound = 0.0
    for chunk in twiddle.split(max(1, (1 << 22) // max(1, matrix.shape[0]))):
        spectrum = (matrix @ chunk.mT).view(out_ch, w.shape[1], -1).permute(2, 0, 1)
        bound = max(bound, spectral_norm_upper(spectrum, entry_error))
    return torch.tensor(bound, dtype=torch.float64)


def conv2d_sound_norm(
    weight: torch.Tensor,
    input_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    explicit: bool = True,
) -> torch.Tensor:
    """Sound ‖conv‖₂ at input shape (C, H, W): the explicit matrix's when small (and `explicit`), else the
    circulant bound (a little looser, and much faster to compute)."""
    w = weight.detach()
    out_hw = conv_output_hw(input_shape[1:], w.shape[2:], stride, padding)
    entries = math.prod(input_shape) * w.shape[0] * math.prod(out_hw)
    if explicit and entries <= EXPLICIT_OPERATOR_MAX_ENTRIES:
        bound = spectral_norm_upper(explicit_conv_matrix(w, input_shape, stride, padding))
    else:
        bound = float(conv2d_circulant_bound(w, input_shape[1:], stride, padding))
    return torch.tensor(bound, dtype=torch.float64, device=w.device)


def avg_pool2d_norm(layer: nn.AvgPool2d, input_shape: Sequence[int]) -> float:
    """AvgPool2d's norm: a depthwise conv with a k×k kernel of 1/k², so one channel's operator suffices."""
    if (
        layer.ceil_mode
        or layer.divisor_override is not None
        or (_pair(layer.padding) != (0, 0) and not layer.count_include_pad)
    ):
        raise UnsupportedLayerError(
            f"{layer!r}: only AvgPool2d with ceil_mode=False, no divisor_override and count_include_pad=True "
            "(or no padding) is a fixed linear map that can be bounded"
        )
    kh, kw = _pair(layer.kernel_size)
    kernel = torch.full((1, 1, kh, kw), up(1.0 / (kh * kw)), dtype=torch.float64)  # ≥ 1/k²: the norm can only grow
    stride = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
    return float(conv2d_sound_norm(kernel, (1, *input_shape[1:]), stride, _pair(layer.padding)))
