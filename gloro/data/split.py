"""What a loader returns: one split of a data set as uint8 images and int64 labels, with its provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class RawSplit:
    """A reader's output before caching: images (N, C, H, W) uint8, labels (N,) int64, and where they came from.

    `sources` holds one checksum record per file read; `fingerprint` the paths whose size and modification
    time identify the source, so a cache built from it can tell when it is stale.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[dict]
    fingerprint: list[Path]


@dataclass(frozen=True)
class Subset:
    """The first `size` examples of a split, or with `seed` a seeded sample of `size` (kept in file order).

    Tiny-ImageNet's training split is ordered by class, so its first N hold few classes: sample it with a seed.
    """

    size: int
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"subset size must be >= 1, got {self.size}")

    @classmethod
    def coerce(cls, value: int | Subset | Mapping | None) -> Subset | None:
        """None, an int (first N), a Subset, or a mapping {size, seed} as a config file holds it."""
        if value is None or isinstance(value, Subset):
            return value
        if isinstance(value, bool):
            raise TypeError(f"subset must be an int, a Subset or a mapping with 'size' and 'seed', got {value!r}")
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "seed"}
            if unknown or "size" not in value:
                raise ValueError(f"a subset mapping has 'size' and optionally 'seed', got {dict(value)}")
            return cls(int(value["size"]), None if value.get("seed") is None else int(value["seed"]))
        raise TypeError(f"subset must be an int, a Subset or a mapping with 'size' and 'seed', got {value!r}")

    def indices(self, total: int) -> torch.Tensor:
        """Sorted indices of the chosen examples among `total`."""
        if self.size > total:
            raise ValueError(f"subset of {self.size} examples asked for, the split has only {total}")
        if self.seed is None:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(total, generator=generator)[: self.size].sort().values

    def describe(self, total: int) -> str:
        if self.seed is None:
            return f"first {self.size} of {total}"
        return f"{self.size} of {total}, sampled with seed {self.seed} (torch.randperm, kept in file order)"


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: `images` uint8 (N, C, H, W) and `labels` int64 (N,), read as published.

    Pixels become [0, 1] by dividing by `divisor` (255; 16 for digits) and nothing else: no mean/std
    normalisation, because ε is defined on that scale. `sources` records each file read and its checksum
    status; `subset` says which examples were kept when not all were.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    divisor: float
    sources: tuple[dict, ...] = ()
    subset: str | None = None
    cache_file: str | None = None
    location: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def float_images(self, device: str | torch.device | None = None) -> torch.Tensor:
        """All images as float32 in [0, 1] on `device` (for large sets, prefer `to_unit_interval` per batch)."""
        return to_unit_interval(self.images.to(device), self.divisor)

    def metadata(self) -> dict:
        """A JSON-serialisable description to store beside a run's outputs."""
        return {
            "dataset": self.name,
            "split": self.split,
            "examples": len(self),
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_divisor": self.divisor,
            "subset": self.subset,
            "location": self.location,
            "cache_file": self.cache_file,
            "sources": [dict(source) for source in self.sources],
        }


def to_unit_interval(images: torch.Tensor, divisor: float) -> torch.Tensor:
    """uint8 pixels (any shape, any device) to float32 in [0, 1]: x / divisor, the paper's only scaling."""
    return images.to(torch.float32).div_(divisor)
