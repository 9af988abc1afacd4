"""Per-layer ℓ2 Lipschitz bounds: power-iteration estimates for training, sound upper bounds for certificates.

Power iteration approaches a spectral norm from below, so it is what training uses (cheap, differentiable,
its iterate kept as a buffer so it persists across steps and in checkpoints) but never what a certificate
rests on. The sound bound is the spectral norm proven from above (`gloro.outward`) of the Linear weight or, for
Conv2d and AvgPool2d, of the explicit operator at the layer's real input shape (when small), else the
polyphase circulant bound of `gloro.conv_norms`, which is never below the true norm.
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
from gloro.conv_norms import (
    check_plain_conv,
    conv2d_sound_norm,
    conv_output_hw,
    conv_padding,
    im2col_indices,
)
from gloro.outward import spectral_norm_upper

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
