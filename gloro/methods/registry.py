"""Training methods by name, as a config names them (`method: kw`); adding one is a module with a
`@register_method` class, imported before the config is read."""

from __future__ import annotations

from gloro.methods.base import Method

_METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of `cls` under `cls.name`; a second class with that name, a
    loss another method already claims or labels that do not match the losses raise."""
    for attribute in ("name", "losses", "labels", "certifier"):
        if not hasattr(cls, attribute):
            raise TypeError(f"method class {cls.__name__} must set {attribute}")
    if cls.name in _METHODS and type(_METHODS[cls.name]) is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({type(_METHODS[cls.name]).__name__})")
    if not cls.losses or len(cls.labels) != len(cls.losses):
        raise ValueError(f"method {cls.name!r}: give one table label per loss, got {cls.labels} for {cls.losses}")
    for other in _METHODS.values():
        if other.name != cls.name and (shared := set(other.losses) & set(cls.losses)):
            raise ValueError(f"method {cls.name!r}: losses {sorted(shared)} already belong to {other.name!r}")
    _METHODS[cls.name] = cls()
    return cls


def list_methods() -> list[str]:
    """Names `get_method` knows, in table order."""
    return sorted(_METHODS, key=lambda name: (_METHODS[name].order, name))


def get_method(name: str) -> Method:
    """The method registered as `name`; an unknown name raises listing the known ones."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
    return _METHODS[name]


def method_for_loss(loss: str) -> Method:
    """The method that trains with `loss`; an unknown loss raises listing the known ones."""
    for method in _METHODS.values():
        if loss in method.losses:
            return method
    raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(training_losses())}")


def training_losses() -> list[str]:
    """Every loss a registered method trains with."""
    return [loss for name in list_methods() for loss in _METHODS[name].losses]


def table_labels() -> list[str]:
    """Every method's table labels, in table order."""
    return [label for name in list_methods() for label in _METHODS[name].labels]
