"""KW (Wong & Kolter 2018; ℓ2 as in Wong et al., NeurIPS 2018): the dual network of the convex outer polytope.

The bound comes from the authors' `convex-adversarial` (installed with --no-deps, plus numpy). Certification
uses its exact ℓ2 dual (`norm_type='l2'`) on a float64 copy of the model, so the library's float32 rounding
does not enter the certificate; its random projections (`proj`, `norm_type='l2_normal'`) give estimates, not
bounds, and are used for training only. The library needs an nn.Sequential of Linear, Conv2d, ReLU and
Flatten, and convolutions whose (H + 2p − k) is divisible by the stride (the paper's architectures are).
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn

from gloro.certify.base import Certifier, certified_with_rounding
from gloro.certify.registry import register_certifier
from gloro.conv_norms import conv_padding
from gloro.gloro_net import GloroNet
from gloro.layers import UnsupportedLayerError
from gloro.sound_constants import SoundConstants

KW_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten)


def convex_adversarial():
    """The authors' library, or an error that says how to install it."""
    try:
        import convex_adversarial as library
    except ImportError as error:  # numpy is an undeclared dependency of the library
        raise ImportError(
            "the KW method needs the authors' convex-adversarial: pip install --no-deps convex-adversarial==0.4.4 "
            f"numpy (it is in requirements-nodeps.txt; {error})"
        ) from error
    return library


def check_kw_model(net: GloroNet) -> None:
    """Reject what convex-adversarial cannot bound, naming the layer, before the library fails obscurely."""
    shape = net.input_shape
    for layer in net.layers:
        if type(layer) not in KW_LAYERS:
            raise UnsupportedLayerError(
                f"KW (convex-adversarial) bounds Linear, Conv2d, ReLU and Flatten layers, not {layer!r}"
            )
        if type(layer) is nn.Conv2d:
            for size, kernel, stride, padding in zip(shape[1:], layer.kernel_size, layer.stride, conv_padding(layer)):
                if (size + 2 * padding - kernel) % stride:
                    raise ValueError(
                        f"{layer!r} on {size}-pixel inputs: convex-adversarial's transposed convolution loses a "
                        f"row when (H + 2p − k) = {size + 2 * padding - kernel} is not divisible by the stride"
                    )
        with torch.no_grad():
            shape = tuple(layer(torch.zeros((1, *shape), dtype=net.head.weight.dtype)).shape[1:])


def kw_margins(
    model: nn.Sequential, x: torch.Tensor, classes: torch.Tensor, epsilon: float, projections: int | None = None
) -> torch.Tensor:
    """(N, m) upper bounds on z_i − z_c over the ℓ2 ball B(x, ε) (0 at c) from the KW dual network.

    `projections`: train-time random projections (an estimate); None is the exact dual, a bound.
    """
    library = convex_adversarial()
    exact = projections is None or math.prod(x.shape[1:]) <= projections  # the library needs more inputs than proj
    options = {"norm_type": "l2"} if exact else {"norm_type": "l2_normal", "proj": int(projections)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="convex_adversarial")
        return library.RobustBounds(model, float(epsilon), **options)(x, classes)


@register_certifier
class KwCertifier(Certifier):
    """The exact ℓ2 KW certificate of a net's predictions at ε, computed in float64."""

    name = "kw"
    default_batch_size = 16  # the exact dual holds (input size × activations) numbers per point

    def prepare(self, net: GloroNet, epsilon: float) -> tuple[nn.Sequential, SoundConstants]:
        check_kw_model(net)
        # the library views activations flat: its layers need contiguous (not channels_last) weights and inputs
        model = copy.deepcopy(net.model).double().to(memory_format=torch.contiguous_format).eval()
        return model, net.sound_constants()

    def certify_batch(self, net, x, epsilon, state):
        logits = net.predict_clean(x)
        predictions = logits.argmax(1)  # the float32 net's prediction is what is certified
        margins = kw_margins(state[0], x.double().contiguous(), predictions, epsilon)
        return predictions, certified_with_rounding(margins, logits, state[1], x, epsilon), None
