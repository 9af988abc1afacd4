"""Input gradients for attacks and searches: single-channel convolutions' from a GEMM and a col2im, and none
for the parameters.

oneDNN's backward-data of a conv with one input channel (every MNIST-shaped net's first layer) runs many
times slower than its forward on a CPU (benchmarks/README.md, session 11), and attacks and the tightness
search need exactly that gradient at every step. `fold_input_gradients(model)` makes such convs compute it
as Wᵀ·g followed by `F.fold` (col2im) for as long as the block runs; their forward is the same `F.conv2d`
call as before.
"""

from __future__ import annotations

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
    dilation) given `grad_output`: each output position's Wᵀ·g patch, summed back onto the input by col2im."""
    batch, out_channels = grad_output.shape[:2]
    positions = grad_output.shape[2] * grad_output.shape[3]
    patches = torch.matmul(
        weight.reshape(out_channels, -1).t(), grad_output.contiguous().reshape(batch, out_channels, positions)
    )
    return F.fold(patches, input_size, weight.shape[-2:], stride=stride, padding=padding)


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
    """Whether `layer` is a conv whose input gradient `fold_input_gradients` takes over: one input channel,
    one group, no dilation, zero padding given as numbers. With three or more input channels oneDNN's own
    backward is as fast or faster (benchmarks/README.md)."""
    return (
        type(layer) is nn.Conv2d
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
