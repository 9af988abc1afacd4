"""The interface every certifier shares (`Certifier`); each returns a `gloro.certificate.Certificate`."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, ClassVar

import torch

from gloro.certificate import Certificate
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.precision import exact_arithmetic
from gloro.sound_constants import SoundConstants
from gloro.timing import repeated_seconds


class Certifier:
    """Certifies a GloroNet's predictions (the wrapped model's argmax) on ℓ2 balls of radius ε.

    Subclasses set `name`, take their settings as keyword arguments (stored in `settings`, recorded with
    every certificate) and implement `certify_batch`; `prepare` holds work shared by all batches of one
    call (sound constants, explicit matrices). Calling a certifier runs in eval mode without gradients, in
    batches of `batch_size`, in IEEE arithmetic (`exact_arithmetic`), on points inside the net's
    `input_range`, and returns one `Certificate` with tensors on the CPU.
    """

    name: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 1024

    def __init__(self, batch_size: int | None = None) -> None:
        batch_size = self.default_batch_size if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @property
    def settings(self) -> dict:
        """What the certificate depends on besides the net, the points and ε."""
        return {"batch_size": self.batch_size}

    def prepare(self, net: GloroNet, epsilon: float) -> Any:
        """One-off work for a call, passed to every `certify_batch` (nothing by default)."""
        return None

    def certify_batch(
        self, net: GloroNet, x: torch.Tensor, epsilon: float, state: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Predictions, certified mask and radii (or None) for one batch `x` on the net's device."""
        raise NotImplementedError

    def __call__(self, net: GloroNet, images: torch.Tensor, epsilon: float | None = None) -> Certificate:
        epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
        if len(images) == 0:
            raise ValueError("no points to certify")
        net.check_input(images)
        net.check_domain(images)
        was_training = net.training
        net.eval()
        device = net.head.weight.device
        parts = []
        try:
            with torch.no_grad(), exact_arithmetic():
                start = time.perf_counter()
                state = self.prepare(net, epsilon)
                for x in images.split(self.batch_size):
                    predictions, certified, radius = self.certify_batch(net, x.to(device), epsilon, state)
                    parts.append((predictions.cpu(), certified.cpu(), None if radius is None else radius.cpu()))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
        finally:
            net.train(was_training)
        radii = [part[2] for part in parts]
        return Certificate(
            predictions=torch.cat([part[0] for part in parts]),
            certified=torch.cat([part[1] for part in parts]).bool(),
            radius=None if radii[0] is None else torch.cat(radii).double(),
            epsilon=epsilon,
            method=self.name,
            settings=self.settings,
            seconds=seconds,
        )

    def timed(self, net: GloroNet, images: torch.Tensor, epsilon: float | None = None) -> Certificate:
        """The certificate of `__call__`, its `seconds` the median of calls repeated until they add up to
        0.2 s (`gloro.timing.repeated_seconds`; a slow certifier runs once), so that the time per point that a
        table prints rises above the timer's and the scheduler's noise."""
        first = self(net, images, epsilon)
        rounds = repeated_seconds(first.seconds, lambda: self(net, images, epsilon).seconds)
        return dataclasses.replace(first, seconds=statistics.median(rounds))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.settings.items())
        return f"{type(self).__name__}({options})"


def certified_with_rounding(
    upper_margins: torch.Tensor, logits: torch.Tensor, constants: SoundConstants, x: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Certified ⇔ the float logits are finite and every upper bound of y_i − y_j on the ball (exact net,
    j = argmax of `logits`) stays below what rounding can add on the ball: −O_ij / 2 with the box-wide
    offsets, or each point's own bound where that decides (`SoundConstants.certified_over_ball`)."""
    return constants.certified_over_ball(x, logits, -upper_margins, epsilon)
