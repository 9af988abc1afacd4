"""Input gradients for attacks and searches: single-channel convolutions' from a GEMM and a col2im, and none
for the parameters.

oneDNN's backward-data of a conv with one input channel (every MNIST-shaped net's first layer) runs many
times slower than its forward on a CPU (benchmarks/README.md, session 11), and attacks and the tightness
search need exactly that gradient at every step. `fold_input_gradients(model)` makes such convs compute it
as Wᵀ·g followed by a col2im for as long as the block runs; their forward is the same `F.conv2d`
call as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def fold_input_gradient(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The gradient w.r.t. the input of `conv2d(x, weight, stride=stride, padding=padding)` (one group, no
    dilation) given `grad_output`: each output position's Wᵀ·g patch, from one GEMM over the whole batch,
    summed back onto the (padded) input by one `index_add_` (a col2im that does not loop over the batch)."""
    batch, out_channels, out_h, out_w = grad_output.shape
    _, in_channels, kernel_h, kernel_w = weight.shape
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    height, width = input_size
    rows = rows_of(grad_output)  # (batch · out_h · out_w, out_channels)
    patches = (rows @ weight.reshape(out_channels, -1)).reshape(batch, -1)  # per position: (cin, kh, kw)
    full_h = max(stride_h * (out_h - 1) + kernel_h, pad_h + height)
    full_w = max(stride_w * (out_w - 1) + kernel_w, pad_w + width)
    index = _patch_index(out_h, out_w, in_channels, kernel_h, kernel_w, stride_h, stride_w, full_h, full_w)
    full = grad_output.new_zeros(batch, in_channels * full_h * full_w).index_add_(1, index.to(rows.device), patches)
    full = full.reshape(batch, in_channels, full_h, full_w)
    return full[:, :, pad_h : pad_h + height, pad_w : pad_w + width].contiguous()  # attacks view() it


def rows_of(grad_output: torch.Tensor) -> torch.Tensor:
    """grad_output as one row of channels per output position (a view when it is channels_last)."""
    return grad_output.permute(0, 2, 3, 1).reshape(-1, grad_output.shape[1])


@functools.lru_cache(maxsize=64)
def _patch_index(out_h, out_w, in_channels, kernel_h, kernel_w, stride_h, stride_w, full_h, full_w) -> torch.Tensor:
    """Where, in the flattened padded input (cin, full_h, full_w), each entry of one image's patches lands:
    patches are ordered (oy, ox, ci, ky, kx), as `fold_input_gradient` forms them."""
    oy, ox, ci, ky, kx = torch.meshgrid(
        *(torch.arange(n) for n in (out_h, out_w, in_channels, kernel_h, kernel_w)), indexing="ij"
    )
    return ((ci * full_h + stride_h * oy + ky) * full_w + stride_w * ox + kx).reshape(-1)


class _FoldedConv2d(torch.autograd.Function):
    """conv2d forward as usual; backward takes the input gradient from `fold_input_gradient`, and the
    parameters' from aten's own convolution_backward (only when they require one)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = fold_input_gradient(grad, weight, x.shape[-2:], ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                ctx.stride,
                ctx.padding,
                [1, 1],
                False,
                [0, 0],
                1,
                [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
            )
        return grad_x, grad_weight, grad_bias, None, None


def folds(layer: nn.Module) -> bool:
    """Whether `layer` is a conv whose input gradient `fold_input_gradients` takes over: on the CPU, one input
    channel, one group, no dilation, zero padding given as numbers. With three or more input channels
    oneDNN's own backward is as fast or faster (benchmarks/README.md); GPUs keep their own (not measured)."""
    return (
        type(layer) is nn.Conv2d
        and layer.weight.device.type == "cpu"
        and layer.in_channels == 1
        and layer.groups == 1
        and tuple(layer.dilation) == (1, 1)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


def _folded_forward(layer: nn.Conv2d):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _FoldedConv2d.apply(x, layer.weight, layer.bias, layer.stride, layer.padding)

    return forward


@contextmanager
def inputs_only(model: nn.Module) -> Iterator[None]:
    """The model's parameters stop requiring gradients for the block: attacks and searches differentiate
    w.r.t. their inputs only, so no backward computes a weight gradient. Restored afterwards."""
    saved = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, required in saved:
            parameter.requires_grad_(required)


@contextmanager
def fold_input_gradients(model: nn.Module) -> Iterator[int]:
    """Within the block, every conv of `model` that `folds` computes its input gradient by GEMM and col2im;
    outputs are unchanged. Yields how many convs it took over; the model is restored on leaving."""
    layers = [layer for layer in model.modules() if folds(layer) and "forward" not in vars(layer)]
    for layer in layers:
        layer.forward = _folded_forward(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
