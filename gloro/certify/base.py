"""The one result type of every certifier (`Certificate`) and the interface they share (`Certifier`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from gloro.gloro_net import GloroNet, check_epsilon


@dataclass(frozen=True, eq=False)
class Certificate:
    """Per-point certification of a net's predictions at ε by one method.

    predictions: (N,) predicted classes; certified: (N,) whether the prediction is proven constant on the
    ℓ2 ball of radius ε; radius: (N,) float64 certified radii for methods that give one (the global and
    local Lipschitz bounds), None for those that only decide a fixed ε (CROWN, KW, BCP). `seconds` is the
    wall-clock time of the whole certification, one-off set-up included.
    """

    predictions: torch.Tensor
    certified: torch.Tensor
    radius: torch.Tensor | None
    epsilon: float
    method: str
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.predictions)

    def vra(self, labels: torch.Tensor) -> float:
        """Verified-robust accuracy: the share of points predicted correctly and certified."""
        correct = self.predictions == labels.to(self.predictions.device)
        return (correct & self.certified).double().mean().item()

    def to_row(self, labels: torch.Tensor | None = None) -> dict:
        """One row of a tidy CSV: the method, ε, counts, time per point and settings (VRA with `labels`)."""
        n = len(self)
        row: dict[str, Any] = {
            "certifier": self.method,
            "epsilon": self.epsilon,
            "num_points": n,
            "certified": int(self.certified.sum()),
            "certified_rate": self.certified.double().mean().item() if n else float("nan"),
            "seconds": self.seconds,
            "sec_per_point": self.seconds / n if n else float("nan"),
            "settings": json.dumps(self.settings, sort_keys=True),
        }
        if labels is not None:
            correct = self.predictions == labels.to(self.predictions.device)
            row["clean_accuracy"] = correct.double().mean().item() if n else float("nan")
            row["vra"] = self.vra(labels) if n else float("nan")
        return row

    def point_rows(self) -> list[dict]:
        """One row per point (index, certifier, prediction, certified, radius), for a per-point CSV."""
        radius = [None] * len(self) if self.radius is None else self.radius.tolist()
        return [
            {"index": i, "certifier": self.method, "prediction": int(p), "certified": bool(c), "radius": r}
            for i, (p, c, r) in enumerate(zip(self.predictions.tolist(), self.certified.tolist(), radius))
        ]


class Certifier:
    """Certifies a GloroNet's predictions (the wrapped model's argmax) on ℓ2 balls of radius ε.

    Subclasses set `name`, take their settings as keyword arguments (stored in `settings`, recorded with
    every certificate) and implement `certify_batch`; `prepare` holds work shared by all batches of one
    call (sound constants, explicit matrices). Calling a certifier runs in eval mode without gradients, in
    batches of `batch_size`, and returns one `Certificate` with tensors on the CPU.
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
        was_training = net.training
        net.eval()
        device = net.head.weight.device
        parts = []
        try:
            with torch.no_grad():
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

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.settings.items())
        return f"{type(self).__name__}({options})"
