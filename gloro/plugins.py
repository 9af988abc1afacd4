"""Importing a user's own modules (methods, certifiers, ...) before a config is read, so that their
`@register_*` decorators run: the pipeline's `plugins:` list, `python -m gloro methods --plugin`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def load_plugins(plugins: Iterable[str]) -> list[ModuleType]:
    """Import each plugin: a path to a .py file (relative to the working directory) or an importable module
    name. Importing one twice is harmless (the module is reused); one that cannot be found or fails to
    import raises ImportError naming it and why."""
    return [_load(str(plugin)) for plugin in plugins]


def _load(plugin: str) -> ModuleType:
    if plugin.endswith(".py") or "/" in plugin:
        return _load_file(Path(plugin))
    try:
        return importlib.import_module(plugin)
    except ImportError as error:
        raise ImportError(
            f"plugin {plugin!r} could not be imported ({error}); give a path to a .py file, or a module on the "
            "Python path"
        ) from error


def _load_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ImportError(f"plugin file {path} does not exist; plugins: takes paths relative to the working directory")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"gloro_plugin_{path.stem}_{digest}"  # one module per file, whichever way the path was written
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ImportError(f"plugin file {path} failed to import: {type(error).__name__}: {error}") from error
    return module
