"""Architectures by name (`create_model('6C2F', ...)`): the paper's, layer by layer as in its code, and any
registered with `@register_architecture` (a function from an `ArchitectureSpec` to the list of layers).

The paper's conv layers use TF 'same' padding as PyTorch integers: padding 1 for k3 s1, and for k4 s2 on even
input sizes. Every conv and dense layer but the last is followed by the activation (ReLU or MinMax).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from gloro.layers import MinMax

# (out_channels, kernel, stride) for a conv; a bare int is a dense layer's width. The logit layer is added.
PAPER_LAYOUTS: dict[str, tuple] = {
    "2C2F": ((16, 4, 2), (32, 4, 2), 100),
    "4C3F": ((32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2), 512, 512),
    "6C2F": ((32, 3, 1), (32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 3, 1), (64, 4, 2), 512),
    "8C2F": ((64, 3, 1), (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), 256),
    # The paper snapshot's Tiny-ImageNet network: seven convs and the logit layer only.
    "7C1F": ((64, 3, 1), (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2)),
}
ACTIVATIONS = {"relu": nn.ReLU, "minmax": MinMax}
INITS = ("glorot_uniform", "orthogonal", "pytorch")


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything needed to rebuild a registry model: stored in checkpoints."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    activation: str = "relu"
    init: str = "glorot_uniform"

    def to_dict(self) -> dict:
        return asdict(self)


Builder = Callable[[ArchitectureSpec], list[nn.Module]]
_ARCHITECTURES: dict[str, Builder] = {}


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(spec) -> layers` as architecture `name` (case-insensitive), so that
    `create_model(name, ...)` and a config's `architecture: name` build it. The layers run in sequence, the
    last one the Linear logit layer; `activation(spec)` gives the spec's activation. A name already taken
    by another builder raises."""

    def register(builder: Builder) -> Builder:
        taken = next((known for known in _ARCHITECTURES if known.lower() == name.lower()), None)
        if taken is not None and _ARCHITECTURES[taken] is not builder:
            raise ValueError(f"an architecture named {taken!r} is already registered")
        _ARCHITECTURES[name] = builder
        return builder

    return register


def list_architectures() -> list[str]:
    """Names known to `create_model`."""
    return list(_ARCHITECTURES)


def canonical_name(name: str) -> str:
    """Registry key for a case-insensitive name; raises listing the known names."""
    for known in _ARCHITECTURES:
        if known.lower() == str(name).lower():
            return known
    raise ValueError(f"unknown architecture {name!r}; known architectures: {', '.join(_ARCHITECTURES)}")


def activation(spec: ArchitectureSpec) -> nn.Module:
    """A new activation layer of the spec's kind."""
    return ACTIVATIONS[spec.activation]()


def create_model(
    name: str,
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    *,
    activation: str = "relu",
    init: str = "glorot_uniform",
    seed: int = 0,
) -> nn.Sequential:
    """Build architecture `name` for (C, H, W) inputs; the spec is kept as `model.architecture`.

    `init`: 'glorot_uniform' with zero biases (Keras' default, used by the paper's MNIST and Tiny runs),
    'orthogonal' (the CIFAR GloRo run), or 'pytorch' (torch.nn defaults).
    """
    spec = ArchitectureSpec(
        canonical_name(name), tuple(int(n) for n in input_shape), int(num_classes), activation.lower(), init.lower()
    )
    if spec.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if spec.init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if len(spec.input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {spec.input_shape}")
    if spec.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {spec.num_classes}")
    model = nn.Sequential(*_ARCHITECTURES[spec.name](spec))
    initialise(model, spec.init, torch.Generator().manual_seed(seed))
    model.architecture = spec
    return model


def paper_layers(layout: tuple, spec: ArchitectureSpec) -> list[nn.Module]:
    """The layer list of one of the paper's layouts for `spec`, with every shape checked against the input."""
    channels, height, width = spec.input_shape
    layers: list[nn.Module] = []
    features = None
    for item in layout:
        if isinstance(item, tuple):
            out, kernel, stride = item
            padding = 1
            height, width = ((n + 2 * padding - kernel) // stride + 1 for n in (height, width))
            if height < 1 or width < 1:
                raise ValueError(f"input shape {spec.input_shape} is too small for {spec.name}")
            layers += [nn.Conv2d(channels, out, kernel, stride, padding), activation(spec)]
            channels = out
        else:
            if features is None:
                layers.append(nn.Flatten())
                features = channels * height * width
            layers += [nn.Linear(features, item), activation(spec)]
            features = item
    if features is None:
        layers.append(nn.Flatten())
        features = channels * height * width
    layers.append(nn.Linear(features, spec.num_classes))
    return layers


def _register_paper_layouts() -> None:
    for name, layout in PAPER_LAYOUTS.items():
        register_architecture(name)(functools.partial(paper_layers, layout))


_register_paper_layouts()


@torch.no_grad()
def initialise(model: nn.Module, init: str, generator: torch.Generator) -> None:
    """Seeded weight initialisation of every conv and dense layer; biases start at zero except for 'pytorch'.
    A layer with a `draw(generator)` method of its own (a family's block, started as its authors start it)
    draws its parameters, its sublayers' included, from the same generator, in module order."""
    drawn: set[int] = set()
    for layer in model.modules():
        if id(layer) in drawn:
            continue
        if callable(getattr(layer, "draw", None)):
            layer.draw(generator)
            drawn.update(id(module) for module in layer.modules())
            continue
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        # a parametrized weight (a normalised head) is drawn through the parameter it is computed from
        weight = layer.parametrizations.weight.original if parametrize.is_parametrized(layer) else layer.weight
        if init == "glorot_uniform":
            nn.init.xavier_uniform_(weight, generator=generator)
        elif init == "orthogonal":
            nn.init.orthogonal_(weight, generator=generator)
        else:
            nn.init.kaiming_uniform_(weight, a=5**0.5, generator=generator)
            bound = 1 / weight[0].numel() ** 0.5
            layer.bias.uniform_(-bound, bound, generator=generator)
            continue
        layer.bias.zero_()
