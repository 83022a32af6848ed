"""Ranking metrics from per-query *tie groups*, exact under both tie modes.

Every backend reduces a chunk of queries to the same small description of their rankings:
for each query, the groups of tied retrieval items that hold at least one relevant item, in
rank order, each with

    c  items ranked strictly before the group (0-based rank of the group's first slot),
    n  items in the group,
    m  relevant items in the group (m >= 1),

plus R, the query's number of relevant items. With ``ties="stable"`` every relevant item is
its own group (n = m = 1, c = its 0-based rank). Groups without a relevant item never change
AP, P@R or the recall-level PR curve (they only shift c of later groups), so they are left
out. Everything below is plain float64 numpy on the CPU, whatever device built the groups,
so CPU and CUDA give the same numbers.

Expected values under a uniformly random order inside each tied group (McSherry & Najork,
ECIR 2008), derived in docs/evaluation.md:

* slot c+j of a group (j = 1..n) holds a relevant item with probability m/n; given that, the
  j-1 earlier slots of the group hold on average (j-1)(m-1)/(n-1) relevant items, so the
  expected precision-at-relevant contributed by the first L slots of the group is

      F(c, n, m, r_b, L) = (m/n) * [ (r_b + 1) * S(c, L) + (m-1)/(n-1) * T(c, L) ]
      S(c, L) = sum_{j=1..L} 1/(c+j) = H(c+L) - H(c)
      T(c, L) = sum_{j=1..L} (j-1)/(c+j) = L - (c+1) * S(c, L)

  with r_b the relevant items ranked before the group and (m-1)/(n-1) read as 0 when n = 1.
* the expected number of relevant items among the first L slots is L*m/n (for P@R).
* AP@k with the "found" denominator divides by a random count; conditioning on the number
  X ~ Hypergeometric(n, m, L) of relevant items in the L slots before the cut makes it exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

_HARMONIC = np.zeros(1, dtype=np.longdouble)


def harmonic(upto: int) -> np.ndarray:
    """H[i] = sum_{j=1..i} 1/j for i = 0..upto, in extended precision (cached, grows)."""
    global _HARMONIC
    if len(_HARMONIC) <= upto:
        size = max(upto + 1, 2 * len(_HARMONIC))
        inv = 1.0 / np.arange(1, size, dtype=np.longdouble)
        _HARMONIC = np.concatenate((np.zeros(1, dtype=np.longdouble), np.cumsum(inv)))
    return _HARMONIC


def prefix_sums(c: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S(c, L) and T(c, L) of the module docstring, as float64 arrays.

    L = 1 (every group in stable mode, almost every group for real-valued scores) is done
    directly: S = 1/(c+1), T = 0. Otherwise the differences of harmonic numbers and the
    cancelling T = L - (c+1)*S are taken in extended precision before rounding.
    """
    c = np.asarray(c, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    s = np.zeros(c.shape, dtype=np.float64)
    t = np.zeros(c.shape, dtype=np.float64)
    one = length == 1
    s[one] = 1.0 / (c[one] + 1.0)
    many = length > 1
    if many.any():
        cm, lm = c[many], length[many]
        h = harmonic(int((cm + lm).max()))
        sl = h[cm + lm] - h[cm]
        s[many] = sl
        t[many] = lm - (cm + 1) * sl
    return s, t


def expected_prefix_sum(c, n, m, r_b, length) -> np.ndarray:
    """F(c, n, m, r_b, L): expected sum of precision-at-relevant over the first L slots of a
    tied group (L = n: the whole group). Single-item groups (n = 1) are m*(r_b+1)/(c+1)."""
    c, n, m, r_b, length = (np.asarray(a, dtype=np.int64) for a in (c, n, m, r_b, length))
    out = m * (r_b + 1.0) / (c + 1.0)
    tied = np.flatnonzero(n > 1)
    if len(tied):
        ct, nt, mt, lt = c[tied], n[tied], m[tied], length[tied]
        s, t = prefix_sums(ct, lt)
        out[tied] = (mt / nt) * ((r_b[tied] + 1) * s + (mt - 1) / (nt - 1) * t)
    return out


def _log_comb(a, b):
    return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)


def expected_found_ap(before, c, n, m, r_b, length, max_cells: int = 1 << 22) -> np.ndarray:
    """E[(before + B) / (r_b + X)] for groups cut by the top-k boundary after `length` slots.

    `before` is the (already expected) precision sum of the groups entirely inside the top k;
    X ~ Hypergeometric(population n, successes m, draws L) counts the relevant items of the
    cut group that land inside the top k and B is their precision sum, whose conditional
    expectation given X = x is F(c, L, x, r_b, L). Terms with r_b + x = 0 score 0.
    """
    before, c, n, m, r_b, length = (np.asarray(a) for a in (before, c, n, m, r_b, length))
    out = np.zeros(len(c), dtype=np.float64)
    if len(c) == 0:
        return out
    lo = np.maximum(0, length - (n - m))
    hi = np.minimum(m, length)
    # Hoeffding (valid for sampling without replacement): P(|X - E X| >= t) <= 2 exp(-2 t^2 / L);
    # with t = sqrt(26 L) the mass left out is below 1e-22 -- zero at float64 precision.
    mean = length * m / np.maximum(n, 1)
    t = np.ceil(np.sqrt(26.0 * length)) + 1
    lo = np.maximum(lo, np.floor(mean - t)).astype(np.int64)
    hi = np.minimum(hi, np.ceil(mean + t)).astype(np.int64)
    width = hi - lo + 1
    order = np.argsort(width, kind="stable")  # similar widths together keep the padding small
    start = 0
    while start < len(order):
        take = max(1, max_cells // int(width[order[start]]))
        while take > 1 and int(width[order[min(len(order), start + take) - 1]]) * take > max_cells:
            take //= 2
        sel = order[start : start + take]
        w = int(width[sel].max())
        x = lo[sel, None] + np.arange(w)[None, :]
        valid = x <= hi[sel, None]
        xs = np.where(valid, x, lo[sel, None]).astype(np.float64)
        nn, mm, ll = (a[sel, None].astype(np.float64) for a in (n, m, length))
        logp = _log_comb(mm, xs) + _log_comb(nn - mm, ll - xs) - _log_comb(nn, ll)
        p = np.where(valid, np.exp(logp), 0.0)
        p /= p.sum(axis=1, keepdims=True)
        s, t = prefix_sums(c[sel], length[sel])
        q = np.where(ll > 1, (xs - 1.0) / np.maximum(ll - 1.0, 1.0), 0.0)
        inside = (xs / ll) * ((r_b[sel, None] + 1.0) * s[:, None] + q * t[:, None])
        den = r_b[sel, None] + xs
        val = np.where(den > 0, (before[sel, None] + inside) / np.where(den > 0, den, 1.0), 0.0)
        out[sel] = (p * val).sum(axis=1)
        start += take
    return out


@dataclass
class Groups:
    """Tie groups with >= 1 relevant item for `n_rows` queries, flattened in (query, rank)
    order. `R[i]` is query i's number of relevant items (sum of its groups' m)."""

    n_rows: int
    R: np.ndarray
    row: np.ndarray
    c: np.ndarray
    n: np.ndarray
    m: np.ndarray

    @classmethod
    def empty(cls, n_rows: int, R: np.ndarray) -> "Groups":
        z = np.zeros(0, dtype=np.int64)
        return cls(n_rows, np.asarray(R, dtype=np.int64), z, z, z, z)

    @classmethod
    def from_items(cls, n_rows: int, R: np.ndarray, row: np.ndarray, pos: np.ndarray) -> "Groups":
        """One group per relevant item at 0-based rank `pos` (stable order)."""
        one = np.ones(len(pos), dtype=np.int64)
        return cls(n_rows, np.asarray(R, np.int64), np.asarray(row, np.int64), np.asarray(pos, np.int64), one, one)

    @classmethod
    def from_dense(cls, N: np.ndarray, M: np.ndarray) -> "Groups":
        """From per-query counts of items N[i, g] and relevant items M[i, g] in tie groups
        g = 0, 1, ... in rank order (e.g. Hamming distance 0..K)."""
        N = np.asarray(N, dtype=np.int64)
        M = np.asarray(M, dtype=np.int64)
        c = np.cumsum(N, axis=1) - N
        row, g = np.nonzero(M)
        return cls(N.shape[0], M.sum(axis=1), row.astype(np.int64), c[row, g], N[row, g], M[row, g])

    def relevant_before(self) -> np.ndarray:
        cum = np.cumsum(self.m)
        row_offset = np.cumsum(self.R) - self.R
        return cum - self.m - row_offset[self.row]


def _per_row_sum(row, values, n_rows):
    return np.bincount(row, weights=values, minlength=n_rows).astype(np.float64, copy=False)


def _safe_div(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def chunk_metrics(groups: Groups, ks, rs, denominator: str, pr_points: int | None):
    """Per-query AP@all, AP@k, P@R and (if pr_points) interpolated precision at the recall
    levels i/(pr_points-1) for one chunk of queries."""
    g = groups
    b = g.n_rows
    r_b = g.relevant_before()
    full_sum = expected_prefix_sum(g.c, g.n, g.m, r_b, g.n)
    out = {"ap": _safe_div(_per_row_sum(g.row, full_sum, b), g.R)}
    end = g.c + g.n
    for k in ks:
        full = end <= k
        part = (g.c < k) & (end > k)
        a_full = _per_row_sum(g.row[full], full_sum[full], b)
        if denominator == "first-relevant":  # stable ties: one group per relevant item, in rank order
            first = r_b < k
            out[f"ap@{k}"] = _safe_div(_per_row_sum(g.row[first], full_sum[first], b), np.minimum(k, g.R))
        elif denominator == "trec":
            length = k - g.c[part]
            inside = expected_prefix_sum(g.c[part], g.n[part], g.m[part], r_b[part], length)
            num = a_full + _per_row_sum(g.row[part], inside, b)
            out[f"ap@{k}"] = _safe_div(num, np.minimum(k, g.R))
        else:
            found = _per_row_sum(g.row[full], g.m[full], b)
            ap = _safe_div(a_full, found)
            pr = g.row[part]
            ap[pr] = expected_found_ap(a_full[pr], g.c[part], g.n[part], g.m[part], r_b[part], k - g.c[part])
            out[f"ap@{k}"] = ap
    for r in rs:
        full = end <= r
        part = (g.c < r) & (end > r)
        hits = _per_row_sum(g.row[full], g.m[full], b)
        hits += _per_row_sum(g.row[part], (r - g.c[part]) * g.m[part] / g.n[part], b)
        out[f"p@{r}"] = hits / r
    if pr_points:
        out["pr"] = interpolated_precision(g, r_b, pr_points)
    return out


def interpolated_precision(g: Groups, r_b: np.ndarray, points: int) -> np.ndarray:
    """Interpolated precision max{precision at cut-offs whose recall >= level} at the levels
    i/(points-1), per query (NaN rows for queries without relevant items).

    Under "average" ties the curve is that of the expected counts: cutting a group after j of
    its n slots retrieves r_b + j*m/n relevant items among c + j. Precision is monotone in j
    inside a group, so the maximum over the cut-offs at or beyond a level is at the first
    whole cut-off reaching the level or at a later group end.
    """
    b = g.n_rows
    out = np.full((b, points), np.nan)
    if len(g.row) == 0:
        return out
    den = points - 1
    end_hits = r_b + g.m
    end_prec = end_hits / (g.c + g.n)
    # containing group of level i: first group of the query with end_hits * den >= i * R
    rows = np.flatnonzero(g.R > 0)
    levels = np.arange(points, dtype=np.int64)
    R = g.R[rows]
    span = (int(g.R.max()) + 1) * den
    key = g.row * span + end_hits * den
    target = rows[:, None] * span + levels[None, :] * R[:, None]
    idx = np.searchsorted(key, target.ravel(), side="left")
    # best group-end precision at or after idx within the query: maxima over the segments
    # [idx_i, idx_i+1) (the last one runs to the query's end, i.e. the next query's idx_0),
    # then a reverse running maximum over the few levels
    seg = np.maximum.reduceat(end_prec, idx).reshape(len(rows), points)
    best_after = np.maximum.accumulate(seg[:, ::-1], axis=1)[:, ::-1]
    idx = idx.reshape(len(rows), points)
    need = levels[None, :] * R[:, None] - r_b[idx] * den  # i*R - r_b*den >= 0 here
    n_i, m_i = g.n[idx], g.m[idx]
    j = np.maximum(-(-(need * n_i) // (m_i * den)), 0)
    pos = g.c[idx] + j
    hits = r_b[idx] + j * m_i / n_i
    cand = np.where(pos > 0, hits / np.maximum(pos, 1), 0.0)
    out[rows] = np.maximum(cand, best_after)
    return out


def radius_curve(N: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query and Hamming radius r: precision and recall of the items within distance <= r.
    Precision is NaN where nothing lies within r; recall is NaN for queries without relevant
    items."""
    cn = np.cumsum(np.asarray(N, dtype=np.int64), axis=1)
    cm = np.cumsum(np.asarray(M, dtype=np.int64), axis=1)
    R = cm[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cn > 0, cm / np.maximum(cn, 1), np.nan)
        recall = np.where(R > 0, cm / np.maximum(R, 1), np.nan)
    return precision, recall
