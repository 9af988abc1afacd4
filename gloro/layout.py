"""Gradients that keep a channels_last net's layout through its Flatten.

A conv net trained or attacked in channels_last flattens its last conv block into a row-major copy, so the
gradient coming back through the Flatten arrives in NCHW while the ReLU output before it is NHWC. PyTorch's
`threshold_backward` on mixed layouts runs many times slower than on matching ones (benchmarks/README.md,
session 11), and the convs behind it then reorder every gradient. `matching_gradients(model)` hands each Flatten's input
gradient back in its input's own layout, for as long as the block runs; values are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _GradientInLayout(torch.autograd.Function):
    """The identity forward; backward returns the gradient in the layout the input had."""

    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def _before_flatten(module: nn.Module, args: tuple) -> tuple | None:
    (x,) = args
    if (
        x.requires_grad
        and x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return (_GradientInLayout.apply(x),)
    return None


@contextmanager
def matching_gradients(model: nn.Module) -> Iterator[int]:
    """Within the block, the gradient through every `nn.Flatten` of `model` comes back channels_last where its
    input was channels_last. Yields how many Flatten layers it hooked; the hooks are removed on leaving."""
    handles = [
        layer.register_forward_pre_hook(_before_flatten) for layer in model.modules() if isinstance(layer, nn.Flatten)
    ]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
