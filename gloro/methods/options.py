"""A method's own settings as a frozen dataclass: read from an experiment's `options:`, checked, and written
back with its results. A field made by `schedule_option` takes a number or a schedule (`gloro.schedules`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from gloro.schedules import SCHEDULES, Constant, schedule_from_config, schedule_to_config


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none."""


def option(default: Any, doc: str) -> Any:
    """A dataclass field for one option: its default and a line on what it does (shown in errors and docs)."""
    return field(default=default, metadata={"doc": doc})


def schedule_option(default: float, doc: str) -> Any:
    """An option that may move per epoch: a number (constant) or a schedule, `default` when unset."""
    return field(default=Constant(default), metadata={"doc": doc, "schedule": True})


def option_names(method) -> tuple[str, ...]:
    """The option names of a registered method (`gloro.methods.Method`), in declaration order."""
    return tuple(item.name for item in fields(method.options_class))


def describe_options(options_class: type) -> str:
    """'name (default: value): what it does' for each option, one per line; 'none' for a method without."""
    lines = []
    for item in fields(options_class):
        default = item.default if item.default is not MISSING else "required"
        if isinstance(default, Constant):
            default = default.value
        elif isinstance(default, tuple(SCHEDULES.values())):
            default = schedule_to_config(default)
        lines.append(f"{item.name} (default: {default!r}): {item.metadata.get('doc', '')}")
    return "\n".join(lines) or "none"


def options_from_config(options_class: type, settings: Mapping[str, Any] | None, method: str) -> Any:
    """The options `settings` give (missing ones at their defaults); an unknown name, a value of the wrong kind
    or one the class's own checks refuse raises ValueError saying which option and what it takes."""
    settings = dict(settings or {})
    known = {item.name: item for item in fields(options_class)}
    if unknown := sorted(set(settings) - set(known)):
        names = ", ".join(known) or "none"
        raise ValueError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options: {names}")
    values = {}
    for name, value in settings.items():
        item = known[name]
        if item.metadata.get("schedule"):
            try:
                values[name] = schedule_from_config(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"method {method!r}, option {name!r}: {error}") from error
            continue
        if not _same_kind(value, item.default):
            expected = type(item.default).__name__
            raise ValueError(f"method {method!r}, option {name!r}: expected {expected}, got {value!r}")
        values[name] = value
    try:
        return options_class(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"method {method!r}: {error}") from error


def options_to_config(options: Any) -> dict[str, Any]:
    """The options as JSON-ready values, schedules in their config form: what a run records."""
    values = {item.name: getattr(options, item.name) for item in fields(type(options))}
    schedules = tuple(SCHEDULES.values())
    return {
        name: schedule_to_config(value) if isinstance(value, schedules) else value for name, value in values.items()
    }


def _same_kind(value: Any, default: Any) -> bool:
    """Whether `value` may stand where `default` does: any value for a None or missing default, a whole
    number for a float, never a bool for a number."""
    if default is None or default is MISSING:
        return True
    if isinstance(value, bool) != isinstance(default, bool):
        return False
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))
