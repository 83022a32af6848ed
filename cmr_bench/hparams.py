"""Hyperparameter declarations: each hyperparameter of a method is declared once, as a `Param`
in the plugin's `params` dict (its default, type, allowed range or choices, search range for
`cmr-bench tune`, smoke value for the conformance checks, one-line doc), and every value that
reaches a method (--set, tuned files, experiment files, tune's trials, the conformance checks)
passes the one validator here, `validate_config`, which returns values of the declared type."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cmr_bench.errors import CmrBenchError

# Caps for a range left open: no hyperparameter of a published method is meaningfully 10^7
# (sizes, epochs) or 1e9; beyond them a value is a user error, not a long failed run.
MAX_INT = 10**7
MAX_FLOAT = 1e9
# Schedule lengths (epochs, iterations): >= 1 (0 trains nothing yet reports a result).
MAX_EPOCHS = 10_000
MAX_ITERATIONS = 1_000_000
SEARCH_KINDS = ("float", "logfloat", "int", "choice")
TYPES = (bool, int, float, str, list)
_UNSET = object()


class HyperparameterError(CmrBenchError):
    """A value a method does not accept (type, range, choices, unknown name): one line, exit 2."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter. `type` is inferred from the default when left out (a tuple default is
    a list); `low`/`high` bound numbers (inclusive; for lists, each item); `item` is a list's item
    type and `length` its fixed length; `choices` the allowed values; `search` the tune range
    as (kind, low, high) with kind float/logfloat/int, or ("choice", [values]); `smoke` the value
    the conformance checks use to make fit() fast (unset: the default)."""

    default: Any
    type: type | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    item: type | None = None
    length: int | None = None
    search: tuple | None = None
    smoke: Any = _UNSET
    doc: str = ""

    def __post_init__(self):
        kind = self.type or (list if isinstance(self.default, (list, tuple)) else type(self.default))
        object.__setattr__(self, "type", kind)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def has_smoke(self) -> bool:
        return self.smoke is not _UNSET

    def describe(self) -> str:
        """The accepted values in words: 'an integer in [1, 10000]', 'one of a, b'."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "a string"
        if self.type is list:
            what = {int: "integers", float: "numbers", None: "values"}.get(self.item, "values")
            n = f"{self.length} " if self.length else ""
            return f"a list of {n}{what}{_bounds(self)}"
        return ("an integer" if self.type is int else "a finite number") + _bounds(self)


def _bounds(p: Param) -> str:
    kind = p.item if p.type is list else p.type
    if kind not in (int, float):
        return ""
    cap = MAX_INT if kind is int else MAX_FLOAT
    low, high = -cap if p.low is None else p.low, cap if p.high is None else p.high
    return f" in [{_num(low)}, {_num(high)}]"


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}" if isinstance(x, float) else str(x)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value, kind: type, p: Param) -> int | float | None:
    """`value` as `kind` (int or float) within the declared range, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
        limit = MAX_INT
    else:
        value = float(value) if isinstance(value, int) else value
        limit = MAX_FLOAT
    if abs(value) > limit:
        return None
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        return None
    return value


def check_value(p: Param, value: Any, what: str) -> Any:
    """`value` in the declared type (an integral float for an int, an int for a float), or a
    HyperparameterError naming `what` and what is accepted."""
    bad = HyperparameterError(f"{what} = {_short(value)}: expected {p.describe()}")
    if p.type is bool:
        if not isinstance(value, bool):
            raise bad
        out = value
    elif p.type in (int, float):
        out = _number(value, p.type, p)
        if out is None:
            raise bad
    elif p.type is str:
        if not isinstance(value, str):
            raise bad
        out = value
    elif p.type is list:
        if not isinstance(value, (list, tuple)) or (p.length is not None and len(value) != p.length):
            raise bad
        items = []
        for x in value:
            if p.item in (int, float):
                x = _number(x, p.item, p)
                if x is None:
                    raise bad
            elif p.item is not None and not isinstance(x, p.item):
                raise bad
            items.append(x)
        out = type(value)(items)
    else:
        if p.type is not object and not isinstance(value, p.type):
            raise bad
        out = value
    if p.choices is not None and out not in p.choices:
        raise bad
    return out


def validate_config(cls, config: dict[str, Any], where: str, complete: bool = False) -> dict[str, Any]:
    """The one validator: every key a declared hyperparameter of `cls`, every value of its type,
    range and choices; returns the values in the declared type (same keys, same order).
    `where` says where the values came from ('--set', 'tuned config <path>', ...).
    `complete`: every declared hyperparameter must be present (a resolved config)."""
    from cmr_bench.errors import UnknownNameError

    params = cls.params
    out = {}
    for key, value in config.items():
        if key not in params:
            raise UnknownNameError(f"hyperparameter of method '{cls.name}'", key, params)
        out[key] = check_value(params[key], value, f"{where}: {cls.name}.{key}")
    if complete:
        missing = [k for k in params if k not in out]
        if missing:
            raise HyperparameterError(f"{where}: {cls.name} config lacks {', '.join(missing)}")
    return out


def check_search(p: Param, key: str, entry, where: str) -> None:
    """A tune range is well formed and inside what the hyperparameter accepts."""
    if not isinstance(entry, tuple) or not entry or entry[0] not in SEARCH_KINDS:
        raise CmrBenchError(f"{where}: expected (kind, ...) with kind one of {', '.join(SEARCH_KINDS)}, got {entry!r}")
    kind = entry[0]
    if kind == "choice":
        if len(entry) != 2 or not isinstance(entry[1], (list, tuple)) or not entry[1]:
            raise CmrBenchError(f"{where}: ('choice', [values...]) with at least one value")
        values = list(entry[1])
    else:
        ok = len(entry) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry[1:])
        if not ok or entry[1] >= entry[2] or (kind == "logfloat" and entry[1] <= 0):
            raise CmrBenchError(f"{where}: ({kind!r}, low, high) with low < high{' and low > 0' if kind == 'logfloat' else ''}")
        if kind == "int" and (p.type is not int or not all(isinstance(v, int) for v in entry[1:])):
            raise CmrBenchError(f"{where}: 'int' needs an integer hyperparameter and integer bounds (default {p.default!r})")
        if kind in ("float", "logfloat") and p.type is not float:
            raise CmrBenchError(f"{where}: {kind!r} needs a float hyperparameter (default {p.default!r}); use 'int' or 'choice'")
        values = list(entry[1:])
    for v in values:
        try:
            check_value(p, v, f"{where}: value")
        except HyperparameterError as exc:
            raise CmrBenchError(str(exc)) from None


def from_legacy(cls) -> dict[str, Param]:
    """Declarations for a plugin written before `params` (separate `defaults`, `choices`,
    `search_space`, `smoke_config` dicts): the type of each default, never negative where the
    default is >= 0 (what --set enforced before), its choices, search range and smoke value."""
    defaults = getattr(cls, "defaults", None) or {}
    choices = getattr(cls, "choices", None) or {}
    space = getattr(cls, "search_space", None) or {}
    smoke = getattr(cls, "smoke_config", None) or {}
    params = {}
    for key, value in defaults.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        extra = {"smoke": smoke[key]} if key in smoke else {}
        params[key] = Param(value, type=None if value is not None else object, low=0 if numeric and value >= 0 else None,
                            choices=choices.get(key), search=space.get(key), **extra)
    return params
