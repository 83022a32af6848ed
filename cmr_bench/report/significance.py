"""Which differences in a table are real: paired, directional tests on the mAP every table prints.

Per entry (a method, or method[variant], at one code length) and direction, the per-query AP
of its runs is averaged over seeds, giving one number per test query; the entry's mAP is the
mean of those numbers. Two entries are compared on the same queries (paired):
- a 95% confidence interval from a paired bootstrap over queries: the same resampled query sets
  (seeded; the seed and resample count are recorded) for every entry of a column;
- a one-sided paired sign-flip permutation test of the mean per-query difference, i.e. of the
  mAP difference itself (H1: A's mAP > B's): seeded random sign flips, p = (1 + #{flipped mean
  >= observed}) / (1 + flips), never 0;
- in a column, the best entry by mAP is tested against every other entry outside its own
  family (the same method at another config: default/tuned, --set), and the p-values are
  Holm-corrected across those comparisons. An entry whose corrected p is >= alpha is tied with
  the best; the best is bold only when no entry is tied with it.
Seed variation enters only through the per-query means (the ± std columns show it).
Only mAP@all has per-query values (mAP@k tables get no marks). See docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_bench.errors import CmrBenchError

BOOTSTRAP_SEED = 0
RESAMPLES = 2000
PERMUTATIONS = 10000
ALPHA = 0.05
LEVEL = 0.95
_FLIP_CHUNK = 1000  # sign-flip rows drawn at a time: bounded memory on large query sets


def per_query_ap(folders, direction: str) -> pd.Series:
    """Per-query AP of one entry in one direction, averaged over its runs (seeds), indexed by
    the query's item index in the dataset. Queries without a relevant item (NaN) are dropped."""
    cols = []
    for folder in folders:
        path = Path(folder) / "arrays.npz"
        try:
            with np.load(path) as arrays:
                ap = np.asarray(arrays[f"per_query_ap_{direction}"], dtype=np.float64)
                ids = np.asarray(arrays["split_query_indices"])
        except (OSError, KeyError, ValueError) as exc:
            raise CmrBenchError(f"run {folder}: no per-query AP for {direction} in arrays.npz ({type(exc).__name__})") from None
        if ap.shape != ids.shape or len(np.unique(ids)) != len(ids):
            raise CmrBenchError(f"run {folder}: per-query AP and query indices do not match in arrays.npz")
        cols.append(pd.Series(ap, index=ids))
    if not cols:
        raise CmrBenchError("no finished runs to compare")
    if any(not c.index.equals(cols[0].index) for c in cols[1:]):
        raise CmrBenchError(f"the runs of one entry were scored on different query sets ({', '.join(map(str, folders))})")
    return pd.concat(cols, axis=1).mean(axis=1, skipna=False).dropna()


def align(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The two entries' values on the same queries; different query sets are not a paired comparison."""
    if set(a.index) != set(b.index):
        raise CmrBenchError(f"the two entries were scored on different query sets ({len(a)} vs {len(b)} queries); "
                            "a paired comparison needs the same test queries")
    return a.to_numpy(), b.reindex(a.index).to_numpy()


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) query indices drawn with replacement; the same seed gives the same sets, so
    intervals of several entries from one call are paired."""
    if n < 1:
        raise CmrBenchError("a bootstrap needs at least one query")
    if resamples < 1:
        raise CmrBenchError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(values: np.ndarray, idx: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean over the resampled query sets in idx."""
    means = np.asarray(values, dtype=np.float64)[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def sign_flip_p(diffs: np.ndarray, flips: int = PERMUTATIONS, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """One-sided paired sign-flip permutation p-values, H1: mean(d) > 0, for each column of diffs
    (n queries x k comparisons). Under H0 each query's difference is as likely to have either
    sign; every column sees the same seeded flips. p = (1 + #{flipped sum >= observed}) / (1 + flips)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    n = d.shape[0]
    if n < 1:
        raise CmrBenchError("a permutation test needs at least one query")
    if flips < 1:
        raise CmrBenchError(f"permutations must be >= 1, got {flips}")
    observed = d.sum(axis=0)
    tol = 1e-12 * n  # summation order differs between observed and flipped sums: not a real exceedance
    rng = np.random.default_rng(seed)
    hits = np.zeros(d.shape[1], dtype=np.int64)
    for start in range(0, flips, _FLIP_CHUNK):
        rows = min(_FLIP_CHUNK, flips - start)
        bits = np.frombuffer(rng.bytes(rows * ((n + 7) // 8)), dtype=np.uint8).reshape(rows, -1)
        signs = np.unpackbits(bits, axis=1, count=n).astype(np.float64) * 2 - 1  # fair coins, 8 per random byte
        hits += (signs @ d >= observed - tol).sum(axis=0)
    return (1 + hits) / (1 + flips)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given): the k-th smallest of m is
    multiplied by (m - k + 1), then made monotone and capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def family(key: str) -> str:
    """The method a row belongs to for the bold competition: its key without the config source
    (" (tuned)") and --set overrides. A variant (method[v]) is a model of its own (ablation
    tables compare variants), so it stays."""
    # not at the top: `compare` imports this module to register its options
    from cmr_bench.report.results import TUNED_SUFFIX

    return key.split(" {")[0].removesuffix(TUNED_SUFFIX)


@dataclass
class Comparison:
    """A minus B on the same queries; p_greater: one-sided p for H1 mAP(A) > mAP(B), p_less for
    H1 mAP(A) < mAP(B) (each a single test, same sign flips)."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci: tuple[float, float]
    p_greater: float
    p_less: float
    wins_a: int
    wins_b: int
    ties: int


def compare(a: pd.Series, b: pd.Series, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
            level: float = LEVEL, flips: int = PERMUTATIONS) -> Comparison:
    x, y = align(a, b)
    d = x - y
    ci = bootstrap_ci(d, resample_indices(len(d), resamples, seed), level)
    p_greater, p_less = sign_flip_p(np.stack([d, -d], axis=1), flips, seed)
    return Comparison(len(d), float(x.mean()), float(y.mean()), float(d.mean()), ci, float(p_greater), float(p_less),
                      int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum()))


@dataclass
class Mark:
    mean: float
    ci: tuple[float, float]
    p_holm: float | None  # best > this entry, one-sided, Holm; None for the best and its own family
    best: bool
    tied: bool  # not shown below the best (the best too, when anything is tied with it)
    bold: bool


def column_marks(entries: dict, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 alpha: float = ALPHA, level: float = LEVEL, families: dict | None = None,
                 flips: int = PERMUTATIONS) -> dict:
    """Marks for one column: each entry's bootstrap CI, and one-sided sign-flip tests of the best
    entry's mAP against every entry outside its family (families[key]; default: each entry its
    own), Holm-corrected across the column."""
    if not entries:
        return {}
    keys = list(entries)
    fam = {k: (families or {}).get(k, k) for k in keys}
    first = entries[keys[0]]
    for k in keys[1:]:
        align(first, entries[k])  # raises on different query sets
    values = {k: entries[k].reindex(first.index).to_numpy() for k in keys}
    idx = resample_indices(len(first), resamples, seed)
    means = {k: float(v.mean()) for k, v in values.items()}
    best = max(keys, key=lambda k: means[k])
    others = [k for k in keys if fam[k] != fam[best]]
    if others:
        raw = sign_flip_p(np.stack([values[best] - values[k] for k in others], axis=1), flips, seed)
        p_of = dict(zip(others, holm(raw)))
    else:
        p_of = {}
    tied = {k for k in others if p_of[k] >= alpha}
    marks = {}
    for k in keys:
        is_best = k == best
        marks[k] = Mark(means[k], bootstrap_ci(values[k], idx, level), float(p_of[k]) if k in p_of else None, is_best,
                        (k in tied) or (is_best and bool(tied)), is_best and bool(others) and not tied)
    return marks


def note(resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, alpha: float = ALPHA, flips: int = PERMUTATIONS) -> str:
    return (f"95% CI: paired bootstrap over test queries ({resamples} resamples, seed {seed}) of per-query AP "
            f"averaged over seeds. Bold: the column's best mAP, higher than every other method's row (one-sided "
            f"paired sign-flip permutation test on the mean per-query AP difference, {flips} flips, seed {seed}, "
            f"Holm-corrected across the column, p < {alpha}); †: not shown lower than the column's best. A method's "
            f"other rows (default/tuned, other settings) are not tested against its best row; variants are methods "
            f"of their own. Seed variation enters only through the per-query means (see ± std).")


def annotate(records: list[dict], display: list[dict], folders: list, columns, metric: str = "map@all",
             resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, keys: list | None = None) -> list[str]:
    """Add CIs and marks to a table built row by row, in place. folders[i]: the finished run
    folders of row i (empty: no runs); keys[i]: row i's key, whose family() groups a method's
    own rows (None: every row its own). columns: (direction, frame prefix, display column).
    Returns the table's notes on it."""
    if metric != "map@all":
        return [f"No CIs or significance marks for {metric}: runs store per-query values for map@all only."]
    notes = []
    rows = [i for i, f in enumerate(folders) if len(f)]
    families = {i: family(keys[i]) if keys and keys[i] else i for i in rows}
    for direction, prefix, col in columns:
        try:
            marks = column_marks({i: per_query_ap(folders[i], direction) for i in rows}, resamples, seed,
                                 families=families)
        except CmrBenchError as exc:
            notes.append(f"{col}: no significance marks ({exc}).")
            continue
        for i, rec in enumerate(records):
            m = marks.get(i)
            rec[f"{prefix}_ci_low"], rec[f"{prefix}_ci_high"] = m.ci if m else (np.nan, np.nan)
            rec[f"{prefix}_p_vs_best"] = (m.p_holm if m.p_holm is not None else np.nan) if m else np.nan
            rec[f"{prefix}_mark"] = ("best" if m.bold else "tied" if m.tied else "") if m else ""
            cells, out = display[i], {}
            for k, v in cells.items():  # the CI column right after its value column
                if k == col and m:
                    v = f"**{v}**" if m.bold else f"{v} †" if m.tied else v
                out[k] = v
                if k == col:
                    out[f"{col} 95% CI"] = f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m else ""
            display[i] = out
    if rows:
        notes.append(note(resamples, seed))
    return notes
