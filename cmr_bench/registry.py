"""The method registry: built-ins in cmr_bench.methods (the repo's methods/ folder) register
with @register_method; installed packages add theirs through the entry-point group
`cmr_bench.methods`. Names are lower-case; --methods takes `all`, comma lists and globs."""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from cmr_bench.errors import CmrBenchError, UnknownNameError
from cmr_bench.plugin import CODE_TYPES, Method

ENTRY_POINT_GROUP = "cmr_bench.methods"

_REGISTRY: dict[str, type[Method]] = {}
_SOURCES: dict[str, str] = {}
_BROKEN: dict[str, str] = {}  # entry-point name -> why it did not load
_loaded = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator for in-tree plugins."""
    _add(cls, source=cls.__module__)
    return cls


def _add(cls, source: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CmrBenchError(f"plugin from {source} is not a cmr_bench.plugin.Method subclass")
    name = cls.name
    if not name or name != name.lower():
        raise CmrBenchError(f"plugin {cls.__qualname__} from {source} needs a lower-case `name`")
    if cls.code_type not in CODE_TYPES:
        raise CmrBenchError(f"method '{name}': code_type must be one of {CODE_TYPES}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise CmrBenchError(f"duplicate method name '{name}': from {_SOURCES[name]} and {source}")
    _REGISTRY[name] = cls
    _SOURCES[name] = source


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import cmr_bench.methods as builtin

    for module in pkgutil.iter_modules(builtin.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"cmr_bench.methods.{module.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _add(ep.load(), source=f"entry point {ep.value}")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # raises, calls sys.exit(), or is no Method: the others still load
            first = (str(exc).splitlines() or [""])[0][:200]
            why = f"{type(exc).__name__}: {first}" if not isinstance(exc, CmrBenchError) else first
            _BROKEN[ep.name] = f"{ep.value}: {why}"
            print(f"cmr-bench: warning: method plugin '{ep.name}' not loaded ({_BROKEN[ep.name]})", file=sys.stderr)


def broken_plugins() -> dict[str, str]:
    """Installed plugins that failed to load, by entry-point name, with the reason."""
    _load()
    return dict(_BROKEN)


def all_methods() -> dict[str, type[Method]]:
    _load()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    methods = all_methods()
    if name not in methods:
        if name in _BROKEN:
            raise CmrBenchError(f"method plugin '{name}' failed to load ({_BROKEN[name]})")
        raise UnknownNameError("method", name, methods)
    return methods[name]


def display_name(key: str) -> str:
    """A row or legend label as papers write it: "beta-vae[mlp] (tuned)" -> "β-VAE [mlp] (tuned)".
    The plugin's `info.display_name`, else the key as given (unknown names pass through)."""
    import re

    match = re.match(r"^([a-z0-9][a-z0-9_.+-]*)(.*)$", key, flags=re.S)
    if not match:
        return key
    name, rest = match.groups()
    cls = all_methods().get(name)
    shown = getattr(getattr(cls, "info", None), "display_name", "") if cls is not None else ""
    if not shown:
        return key
    return shown + (" " + rest if rest.startswith("[") else rest)


def method_source(name: str) -> str:
    _load()
    return _SOURCES[name]


def resolve_methods(spec: str) -> list[str]:
    """'all' | 'a,b' | globs like 'sd*' -> registered names in order, no duplicates."""
    methods = all_methods()
    names: list[str] = []
    for part in [p.strip().lower() for p in spec.split(",") if p.strip()]:
        if part == "all":
            found = [n for n, c in methods.items() if c.in_all]
        elif any(ch in part for ch in "*?["):
            found = fnmatch.filter(methods, part)
            if not found:
                raise CmrBenchError(f"no method matches '{part}'")
        else:
            get_method(part)
            found = [part]
        names += [n for n in found if n not in names]
    if not names:
        raise CmrBenchError("no methods given")
    return names
