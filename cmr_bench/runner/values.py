"""Parsers for the integer lists and numbers that `run`, `tune`, `reproduce` and experiment
files take (seeds, code lengths, counts): each refuses bad text with one line."""

from __future__ import annotations

from cmr_bench.errors import CmrBenchError

MAX_VALUES = 100_000
MAX_BITS = 4096


def int_list(text: str, what: str, minimum: int = 0) -> list[int]:
    """'0,1,2' or '0-4' -> ints; anything else is a one-line error."""
    out: list[int] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise CmrBenchError(f"{what}: empty range '{part}' (write low-high)")
                if hi - lo + 1 > MAX_VALUES:
                    raise CmrBenchError(f"{what}: range '{part}' has more than {MAX_VALUES:,} values")
                out += list(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise CmrBenchError(f"{what}: expected integers like 0,1,2 or 0-4, got '{text}'") from None
        if len(out) > MAX_VALUES:
            raise CmrBenchError(f"{what}: more than {MAX_VALUES:,} values")
    if not out:
        raise CmrBenchError(f"{what}: no values given")
    if min(out) < minimum:
        raise CmrBenchError(f"{what}: values must be >= {minimum}, got {min(out)}")
    return list(dict.fromkeys(out))


def positive_int(text, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise CmrBenchError(f"{what}: expected a whole number >= 1, got '{text}'") from None
    if value < 1:
        raise CmrBenchError(f"{what}: must be >= 1, got {value}")
    return value


def non_negative_float(text, what: str, positive: bool = False) -> float:
    import math

    try:
        value = float(str(text).strip())
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise CmrBenchError(f"{what}: expected a {'positive' if positive else 'non-negative'} number, got '{text}'")
    return value


# A seed seeds numpy and torch (< 2**63) and names a run folder.
MAX_SEED = 2**63 - 1


def seed_value(value, what: str = "--seed") -> int:
    """One seed: an integer in [0, 2**63 - 1]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise CmrBenchError(f"{what}: expected an integer in [0, 2**63 - 1], got {value!r}")
    return value


def bits_value(value, what: str = "--bits") -> int:
    """One code length: an integer in [1, MAX_BITS], as `run --bits` takes them."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BITS:
        raise CmrBenchError(f"{what}: expected a code length in [1, {MAX_BITS}], got {value!r}")
    return value
