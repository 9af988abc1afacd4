"""The training of the 1-Lipschitz families (SLL, AOL), as the 1-Lipschitz-layers comparison (Prach et al.,
CVPR 2024) ran them: an offset cross-entropy T·CE((z − u·onehot(y))/T, y) on the logits of a net whose
row-normalised head moves each logit difference by at most 2 per unit of input distance; certified by the
global bound of the trained weights, not by the layers' claimed 1."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gloro.methods.base import Method, Objective
from gloro.methods.options import option
from gloro.methods.registry import register_method


@dataclass(frozen=True)
class OffsetOptions:
    offset: float | None = option(
        None, "u, subtracted from the label's logit before the cross-entropy; null: 2√2·ε (the 1LLC rule)"
    )
    temperature: float = option(0.25, "T, dividing the logits before the cross-entropy and multiplying the loss")

    def __post_init__(self) -> None:
        if self.offset is not None and not self.offset >= 0:
            raise ValueError(f"offset must be >= 0 or null, got {self.offset}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def offset_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, offset: float, temperature: float) -> torch.Tensor:
    """T·CE((z − u·onehot(y))/T, y): cross-entropy that asks the label's logit to lead by more than u."""
    shifted = logits - offset * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return temperature * F.cross_entropy(shifted / temperature, labels)


class OffsetMethod(Method):
    """A method trained with the offset cross-entropy and certified by the global bound (subclass per family;
    each names its own loss, since a config's `loss` selects the method)."""

    certifier = "global"
    options_class = OffsetOptions

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        logits = net(x)  # [z, z_⊥]: ⊥ from the training estimate, the layers' claimed 1
        clean = logits[:, :-1]
        offset = recipe.options.offset
        offset = 2 * math.sqrt(2) * net.epsilon if offset is None else offset
        loss = offset_cross_entropy(clean, y, offset, recipe.options.temperature)
        return loss, clean, logits.argmax(1) == y


@register_method
class SLLMethod(OffsetMethod):
    """SLL (Araujo, Havens, Delattre, Allauzen & Hu, ICLR 2023) on nets of `gloro.families.sll` layers."""

    name = "sll"
    losses = ("sll",)
    labels = ("SLL",)
    order = 60
    reference = "Araujo, Havens, Delattre, Allauzen & Hu, ICLR 2023; recipe of Prach et al., CVPR 2024 (1LLC)"


@register_method
class AOLMethod(OffsetMethod):
    """AOL (Prach & Lampert, ECCV 2022) on nets of `gloro.families.aol` layers."""

    name = "aol"
    losses = ("aol",)
    labels = ("AOL",)
    order = 55
    reference = "Prach & Lampert, ECCV 2022; recipe of Prach et al., CVPR 2024 (1LLC)"


@register_method
class CPLMethod(OffsetMethod):
    """CPL (Meunier, Delattre, Araujo & Allauzen, ICML 2022) on nets of `gloro.families.cpl` layers."""

    name = "cpl"
    losses = ("cpl",)
    labels = ("CPL",)
    order = 65
    reference = "Meunier, Delattre, Araujo & Allauzen, ICML 2022; recipe of Prach et al., CVPR 2024 (1LLC)"
