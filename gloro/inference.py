"""A Sequential net's forward pass without autograd, its ReLUs applied in place to the intermediates it owns.

The values are bit for bit those of `model(x)` (ReLU is exact, so the forward-error bound is unchanged),
with one tensor fewer written and read per activation: on 2C2F at batch 1024 the forward pass is about
10% faster. Any hook that could see an intermediate (on the container, on a ReLU, on the layer that
produced the tensor, or a global one) sends the pass back to the module's own forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

FRESH_OUTPUTS = frozenset({nn.Conv2d, nn.Linear, nn.AvgPool2d})  # each returns a tensor nothing else holds


def hooked(layer: nn.Module) -> bool:
    """Whether a forward hook or pre-hook is registered on `layer`."""
    return bool(layer._forward_hooks or layer._forward_pre_hooks)


def forward_in_place(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`model(x)`, with ReLUs in place where that cannot be observed; only for use with autograd off."""
    global_hooks = module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks
    if torch.is_grad_enabled() or global_hooks or hooked(model):
        return model(x)
    return _run(model, x, owned=False)[0]


def _run(container: nn.Sequential, h: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
    """The layers of `container` applied to h; `owned`: whether h is an intermediate only this pass holds."""
    for layer in container._modules.values():
        kind = type(layer)
        if kind is nn.ReLU and not hooked(layer):
            h = h.relu_() if owned else torch.relu(h)
            owned = True
        elif kind is nn.Sequential and not hooked(layer):
            h, owned = _run(layer, h, owned)
        elif kind is nn.Flatten and not hooked(layer):
            h = layer(h)  # a view of h (or of x), or a copy: h's ownership carries over either way
        else:
            h = layer(h)
            owned = kind in FRESH_OUTPUTS and not hooked(layer)
    return h, owned
