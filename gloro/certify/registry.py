"""Certifiers by name, as a config names them: `create_certifier('bcp')`, `list_certifiers()`."""

from __future__ import annotations

from gloro.certify.base import Certifier

CERTIFIERS: dict[str, type[Certifier]] = {}


def register_certifier(cls: type[Certifier]) -> type[Certifier]:
    """Class decorator: make `cls` available to `create_certifier` under `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered")
    if cls.name in CERTIFIERS and CERTIFIERS[cls.name] is not cls:
        raise ValueError(f"a certifier named {cls.name!r} is already registered ({CERTIFIERS[cls.name].__name__})")
    CERTIFIERS[cls.name] = cls
    return cls


def list_certifiers() -> list[str]:
    """The names `create_certifier` knows."""
    return sorted(CERTIFIERS)


def create_certifier(name: str, **settings) -> Certifier:
    """The certifier registered as `name`, built with `settings`; an unknown name raises listing the known ones."""
    if name not in CERTIFIERS:
        raise ValueError(f"unknown certifier {name!r}; known certifiers: {', '.join(list_certifiers())}")
    return CERTIFIERS[name](**settings)
