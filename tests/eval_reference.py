"""Slow, independent references for the evaluator (tests and benchmarks only).

Written from the definitions in docs/evaluation.md, one query at a time, without the fast
code's tricks (no harmonic numbers, no count tables, no chunking):

* `reference_evaluate`: plain Python loops over the ranking of each query. Ties "average"
  use the per-slot expectation (slot j of a tied group of n items with m relevant is relevant
  with probability m/n; given that, it is preceded inside the group by (j-1)(m-1)/(n-1)
  relevant items on average), summed slot by slot; map@k "found" conditions on the number of
  relevant items before the cut with exact binomial coefficients. Used on small inputs.
* `numpy_loop_evaluate`: the usual per-query numpy loop of published evaluation code
  (distance row, argsort, cumulative sums), extended with the same tie handling; it is
  the baseline the benchmarks time, and is itself checked against `reference_evaluate`.
* `expected_by_permutation`: the definition of "average" itself, by brute force: the mean
  of the stable result over all (or random) orders of the retrieval set.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np


# ---------------------------------------------------------------------------- scores, labels
def _pm1(x):
    x = np.asarray(x, dtype=np.float64)
    if set(np.unique(x).tolist()) <= {0.0, 1.0} and not set(np.unique(x).tolist()) <= {1.0}:
        return 2 * x - 1
    return x


def ranking_keys(q, r, similarity):
    """Key of each retrieval item for query vector q (smaller ranks first)."""
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if similarity == "hamming":
        return np.array([float(np.count_nonzero(q != row)) for row in r])
    if similarity == "euclidean":
        return np.array([float(np.sum((q - row) ** 2)) for row in r])
    qn = math.sqrt(float(np.dot(q, q)))
    out = []
    for row in r:
        rn = math.sqrt(float(np.dot(row, row)))
        out.append(0.0 if qn == 0 or rn == 0 else -float(np.dot(q / qn, row / rn)))
    return np.array(out)


def relevance(ql, rl):
    """Relevance of each retrieval item for one query label (int) or multi-hot row."""
    if np.ndim(ql) == 0:
        return np.array([int(ql) == int(x) for x in rl])
    return np.array([bool(np.any((np.asarray(ql) > 0) & (np.asarray(x) > 0))) for x in rl])


def _groups(keys, rel):
    """Tied groups in rank order: list of (c, n, m, r_b)."""
    order = sorted(range(len(keys)), key=lambda j: (keys[j], j))
    groups, c, r_b, i = [], 0, 0, 0
    while i < len(order):
        j = i
        while j < len(order) and keys[order[j]] == keys[order[i]]:
            j += 1
        m = sum(bool(rel[t]) for t in order[i:j])
        groups.append((c, j - i, m, r_b))
        c += j - i
        r_b += m
        i = j
    return groups


def _slot_value(n, m, r_b, c, j):
    """Expected precision-at-relevant contribution of slot j (1-based) of a tied group."""
    inside = (j - 1) * (m - 1) / (n - 1) if n > 1 else 0.0
    return (m / n) * (r_b + 1 + inside) / (c + j)


# ---------------------------------------------------------------------------- one query
def query_metrics(keys, rel, ks, rs, ties, denominator, pr_points, radii=None):
    """Metrics of one query. keys: ranking keys (smaller first), rel: bools."""
    keys = [float(k) for k in keys]
    rel = [bool(x) for x in rel]
    n_r = len(keys)
    R = sum(rel)
    if ties == "stable":
        order = sorted(range(n_r), key=lambda j: (keys[j], j))
        groups, r_b = [], 0
        for pos, j in enumerate(order):
            groups.append((pos, 1, int(rel[j]), r_b))
            r_b += int(rel[j])
    else:
        groups = _groups(keys, rel)
    out = {}
    total = sum(_slot_value(n, m, r_b, c, j) for c, n, m, r_b in groups if m for j in range(1, n + 1))
    out["ap"] = total / R if R else 0.0
    for k in ks:
        inside = 0.0  # expected precision sum over slots <= k
        found = 0.0
        cut = None
        for c, n, m, r_b in groups:
            if c + n <= k:
                if m:
                    inside += sum(_slot_value(n, m, r_b, c, j) for j in range(1, n + 1))
                found += m
            elif c < k:
                cut = (c, n, m, r_b)
        if denominator == "trec":
            if cut and cut[2]:
                c, n, m, r_b = cut
                inside += sum(_slot_value(n, m, r_b, c, j) for j in range(1, k - c + 1))
            out[f"ap@{k}"] = inside / min(k, R) if R else 0.0
        elif cut is None or cut[2] == 0:
            out[f"ap@{k}"] = inside / found if found else 0.0
        else:
            c, n, m, r_b = cut
            L = k - c
            value = 0.0
            for x in range(0, min(m, L) + 1):
                ways = math.comb(m, x) * math.comb(n - m, L - x)
                if ways == 0 or r_b + x == 0:
                    continue
                p = ways / math.comb(n, L)
                part = sum(_slot_value(L, x, r_b, c, j) for j in range(1, L + 1)) if x else 0.0
                value += p * (inside + part) / (r_b + x)
            out[f"ap@{k}"] = value
    for cutoff in rs:
        hits = 0.0
        for c, n, m, r_b in groups:
            slots = min(n, max(0, cutoff - c))
            hits += slots * m / n
        out[f"p@{cutoff}"] = hits / cutoff
    if radii is not None:  # Hamming: keys are distances
        prec, rec = [], []
        for radius in radii:
            got = [j for j in range(n_r) if keys[j] <= radius]
            hits = sum(rel[j] for j in got)
            prec.append(hits / len(got) if got else float("nan"))
            rec.append(hits / R if R else float("nan"))
        out["pr_precision"], out["pr_recall"] = prec, rec
    elif pr_points:
        out["pr"] = _interpolated(groups, R, pr_points)
    return out


def _interpolated(groups, R, points):
    """max precision over cut-offs p = 1..n whose (expected) recall reaches each level."""
    if R == 0:
        return [float("nan")] * points
    curve = []  # (expected hits as Fraction, cut-off)
    for c, n, m, r_b in groups:
        for j in range(1, n + 1):
            curve.append((r_b + Fraction(j * m, n), c + j))
    out = []
    for i in range(points):
        level = Fraction(i * R, points - 1)
        out.append(max(float(h / p) for h, p in curve if h >= level))
    return out


# ---------------------------------------------------------------------------- all queries
def reference_evaluate(query, retrieval, query_labels, retrieval_labels, *, similarity="cosine", ks=(50,), rs=(),
                       ties="average", map_k_denominator="found", zero_relevant="count", pr_points=11,
                       queries=None):
    """Same keys as cmr_bench.evaluate (pr_curve lists included). `queries`: optional subset."""
    q = np.asarray(query)
    r = np.asarray(retrieval)
    if similarity == "hamming":
        q, r = _pm1(q), _pm1(r)
    ql, rl = np.asarray(query_labels), np.asarray(retrieval_labels)
    idx = range(len(q)) if queries is None else queries
    radii = list(range(q.shape[1] + 1)) if similarity == "hamming" else None
    per = [query_metrics(ranking_keys(q[i], r, similarity), relevance(ql[i], rl), ks, rs, ties, map_k_denominator,
                         pr_points, radii) for i in idx]
    R = [int(relevance(ql[i], rl).sum()) for i in idx]
    use = [j for j in range(len(per)) if R[j] > 0 or zero_relevant == "count"]
    mean = lambda vals: sum(vals) / len(vals) if vals else float("nan")  # noqa: E731
    res = {"map@all": mean([per[j]["ap"] for j in use])}
    for k in ks:
        res[f"map@{k}"] = mean([per[j][f"ap@{k}"] for j in use])
    for c in rs:
        res[f"p@{c}"] = mean([per[j][f"p@{c}"] for j in use])
    withrel = [j for j in range(len(per)) if R[j] > 0]
    if radii is not None:
        prec = []
        for t in range(len(radii)):
            vals = [per[j]["pr_precision"][t] for j in withrel if not math.isnan(per[j]["pr_precision"][t])]
            prec.append(mean(vals))
        res["pr_curve"] = {"radius": radii, "recall": [mean([per[j]["pr_recall"][t] for j in withrel]) for t in range(len(radii))],
                           "precision": prec}
    else:
        res["pr_curve"] = {"recall": [i / (pr_points - 1) for i in range(pr_points)],
                           "precision": [mean([per[j]["pr"][t] for j in withrel]) for t in range(pr_points)]}
    res["per_query_ap"] = np.array([per[j]["ap"] if (R[j] > 0 or zero_relevant == "count") else np.nan for j in range(len(per))])
    res["n_queries"] = len(use)
    return res


# ---------------------------------------------------------------------------- definition of "average"
def expected_by_permutation(evaluate_stable, n_r, perms=None, rng=None, draws=0):
    """Mean (and standard error) of evaluate_stable(perm) over all permutations of range(n_r)
    (perms=None, draws=0) or over `draws` random ones. evaluate_stable(perm) must return a dict
    of floats for the retrieval set reordered by perm with ties broken by (new) index."""
    if draws:
        samples = [evaluate_stable(rng.permutation(n_r)) for _ in range(draws)]
    else:
        samples = [evaluate_stable(np.array(p)) for p in itertools.permutations(range(n_r))]
    keys = samples[0].keys()
    mean = {k: float(np.mean([s[k] for s in samples])) for k in keys}
    sem = {k: float(np.std([s[k] for s in samples]) / math.sqrt(len(samples))) for k in keys}
    return mean, sem


# ---------------------------------------------------------------------------- per-query numpy loop
def numpy_loop_evaluate(query, retrieval, query_labels, retrieval_labels, *, similarity="cosine", ks=(50,), rs=(),
                        ties="average", queries=None):
    """The per-query numpy loop (map@all, map@k with the "found" denominator, p@R), ties
    "average" or "stable", as published evaluation code is written: one distance row and one
    argsort per query. Returns {"map@all", "map@k"..., "p@R"..., "per_query_ap"}."""
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(retrieval, dtype=np.float64)
    ql, rl = np.asarray(query_labels), np.asarray(retrieval_labels)
    if ql.ndim == 2:  # multi-hot: float products (BLAS), as published code does
        ql, rl = ql.astype(np.float64), rl.astype(np.float64)
    if similarity == "hamming":
        q, r = _pm1(q), _pm1(r)
        n_bits = q.shape[1]
    elif similarity == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)
    rsq = (r * r).sum(axis=1)
    idx = range(len(q)) if queries is None else queries
    n_r = len(r)
    pos = np.arange(1, n_r + 1, dtype=np.float64)
    aps, apk, pr = [], {k: [] for k in ks}, {c: [] for c in rs}
    for i in idx:
        if similarity == "hamming":
            key = 0.5 * (n_bits - r @ q[i])
        elif similarity == "cosine":
            key = -(r @ q[i])
        else:
            key = rsq - 2 * (r @ q[i])
        rel = (rl == ql[i]) if ql.ndim == 1 else ((rl @ ql[i]) > 0)
        order = np.argsort(key, kind="stable")
        ks_sorted = key[order]
        g = rel[order].astype(np.float64)
        R = g.sum()
        if ties == "stable":
            hits = np.cumsum(g)
            prec_rel = g * hits / pos
            exp_hits = hits
        else:
            new = np.ones(n_r, bool)
            new[1:] = ks_sorted[1:] != ks_sorted[:-1]
            gid = np.cumsum(new) - 1
            starts = np.flatnonzero(new)
            n = np.diff(np.append(starts, n_r))[gid]
            m = np.add.reduceat(g, starts)[gid]
            c = starts[gid]
            r_b = (np.cumsum(np.add.reduceat(g, starts)) - np.add.reduceat(g, starts))[gid]
            j = pos - c
            inside = np.where(n > 1, (j - 1) * (m - 1) / np.maximum(n - 1, 1), 0.0)
            prec_rel = (m / n) * (r_b + 1 + inside) / pos
            exp_hits = r_b + j * m / n
        aps.append(prec_rel.sum() / R if R else 0.0)
        for k in ks:
            top = min(k, n_r)
            if ties == "average" and top < n_r and ks_sorted[top - 1] == ks_sorted[top] and m[top - 1] > 0:
                # the cut splits a tied group: condition on the relevant items before the cut
                c0, n0, m0, rb0 = int(c[top - 1]), int(n[top - 1]), int(m[top - 1]), float(r_b[top - 1])
                L = top - c0
                before = prec_rel[:c0].sum()
                val = 0.0
                for x in range(max(0, L - (n0 - m0)), min(m0, L) + 1):
                    p = math.comb(m0, x) * math.comb(n0 - m0, L - x) / math.comb(n0, L)
                    jj = np.arange(1, L + 1)
                    ins = (x / L) * (rb0 + 1 + ((jj - 1) * (x - 1) / (L - 1) if L > 1 else 0.0)) / (c0 + jj)
                    if rb0 + x > 0:
                        val += p * (before + (ins.sum() if x else 0.0)) / (rb0 + x)
                apk[k].append(val)
            else:
                found = exp_hits[top - 1]
                apk[k].append(prec_rel[:top].sum() / found if found > 0 else 0.0)
        for cutoff in rs:
            pr[cutoff].append(exp_hits[min(cutoff, n_r) - 1] / cutoff)
    res = {"map@all": float(np.mean(aps))}
    res.update({f"map@{k}": float(np.mean(v)) for k, v in apk.items()})
    res.update({f"p@{c}": float(np.mean(v)) for c, v in pr.items()})
    res["per_query_ap"] = np.array(aps)
    return res


def calc_map_k_reference(query, retrieval, query_labels, retrieval_labels, *, similarity, k=None):
    """The published PyTorch calc_map_k, query by query: rank by key (ties in retrieval order),
    take the 1-based ranks of the first min(k, R) relevant items, average (i / rank_i); a query
    without relevant items adds 0 and still counts. Returns (mAP, per-query AP)."""
    n_r = len(retrieval)
    k = n_r if k is None else k
    aps = []
    for i in range(len(query)):
        rel = relevance(query_labels[i], retrieval_labels)
        keys = ranking_keys(query[i], retrieval, similarity)
        order = sorted(range(n_r), key=lambda j: (keys[j], j))
        ranks = [pos + 1 for pos, j in enumerate(order) if rel[j]]
        total = min(k, len(ranks))
        aps.append(sum((c + 1) / ranks[c] for c in range(total)) / total if total else 0.0)
    return sum(aps) / len(aps), np.array(aps)
