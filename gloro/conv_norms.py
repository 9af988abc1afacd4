"""A zero-padded, strided Conv2d (and AvgPool2d) as an operator at its real input shape: its geometry, its
explicit matrix, and sound upper bounds on its ℓ2 norm (the explicit matrix's when small, else the polyphase
circulant bound, which is never below the true norm)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro.layers import UnsupportedLayerError
from gloro.outward import U64, gamma, norm_up, spectral_norm_upper, up

# Explicit operators up to this many entries (in x out) are bounded by an exact eigen-decomposition.
EXPLICIT_OPERATOR_MAX_ENTRIES = 1 << 24


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


def polyphase_taps(weight: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """A conv kernel (out, in, kh, kw) in polyphase form, (out, in, taps_h, s_h, taps_w, s_w): the kernel padded
    with zeros to whole strides, so that tap (a, b) of phase (p, q) is the weight at (a·s_h + p, b·s_w + q)."""
    out_ch, in_ch, kh, kw = weight.shape
    sh, sw = _pair(stride)
    taps_h, taps_w = math.ceil(kh / sh), math.ceil(kw / sw)
    padded = F.pad(weight, (0, taps_w * sw - kw, 0, taps_h * sh - kh))
    return padded.view(out_ch, in_ch, taps_h, sh, taps_w, sw)


def conv2d_circulant_bound(
    weight: torch.Tensor, input_hw: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> torch.Tensor:
    """Upper bound on a zero-padded, strided conv's ℓ2 norm via a circular conv on its polyphase form.

    A stride-s conv equals a stride-1 conv on the space-to-depth (polyphase) input with C·s² channels; the
    zero-padded input embeds isometrically into an N×N torus large enough that no nonzero tap wraps, so the
    conv is a restriction of a circular conv, whose norm is max over DFT frequencies of σ_max(K̂(ω)). The
    transforms are taken directly (a few taps each), so their rounding can be bounded and added.
    """
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    w = polyphase_taps(weight.detach().double().cpu(), (sh, sw))
    out_ch, in_ch, taps_h, _, taps_w, _ = w.shape
    w = w.permute(0, 1, 3, 5, 2, 4).reshape(out_ch, in_ch * sh * sw, taps_h * taps_w)
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
