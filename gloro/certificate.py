"""`Certificate`: what every certifier returns (global, local, CROWN, KW, BCP), one small frozen type."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch


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
