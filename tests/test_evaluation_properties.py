"""Evaluator against independent references: the slow per-query reference (hypothesis),
brute force over all database orders (the definition of ties="average"), Monte Carlo over
random orders, and the tie formulas against enumeration."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmr_bench.evaluation import evaluate
from cmr_bench.evaluation._metrics import expected_found_ap, expected_prefix_sum
from eval_reference import calc_map_k_reference, expected_by_permutation, numpy_loop_evaluate, reference_evaluate

TOL = 1e-9  # the spec asks for 1e-6; the implementation is exact up to rounding


def exact_codes(rng, n, d, similarity, continuous=False):
    """Codes whose scores are computed exactly in floating point, so that ties are true ties
    in both implementations: Hamming bits; small integers for Euclidean; for cosine, rows with
    exactly four +-1 entries (norm 2), or continuous random rows (no ties at all)."""
    if similarity == "hamming":
        return rng.integers(0, 2, (n, d))
    if similarity == "euclidean":
        return rng.integers(-2, 3, (n, d)).astype(np.float64)
    if continuous:
        return rng.normal(size=(n, d))
    x = np.zeros((n, d))
    for i in range(n):
        cols = rng.choice(d, 4, replace=False)
        x[i, cols] = rng.choice([-1.0, 1.0], 4)
    return x


def labels(rng, n, multilabel, n_classes=4, density=0.3):
    if multilabel:
        return (rng.random((n, n_classes)) < density).astype(np.int64)
    return rng.integers(0, n_classes, n)


def assert_same(fast, ref, keys=None, tol=TOL):
    for key in keys or ref:
        if key in ("n_queries",):
            assert fast[key] == ref[key]
            continue
        if key == "pr_curve":
            for part, values in ref[key].items():
                np.testing.assert_allclose(np.asarray(fast[key][part], float), np.asarray(values, float),
                                           atol=tol, rtol=0, err_msg=f"pr_curve[{part}]")
            continue
        np.testing.assert_allclose(np.asarray(fast[key], float), np.asarray(ref[key], float), atol=tol, rtol=0,
                                   err_msg=key)


@st.composite
def cases(draw):
    similarity = draw(st.sampled_from(["cosine", "hamming", "euclidean"]))
    n_q = draw(st.integers(1, 5))
    n_r = draw(st.integers(1, 30))
    d = draw(st.integers(1, 6)) if similarity == "hamming" else draw(st.integers(4, 7))
    multilabel = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    continuous = similarity == "cosine" and draw(st.booleans())
    ks = tuple(draw(st.lists(st.integers(1, n_r + 5), min_size=1, max_size=3)))
    rs = tuple(draw(st.lists(st.integers(1, n_r + 5), min_size=0, max_size=3)))
    opts = dict(
        ties=draw(st.sampled_from(["average", "stable"])),
        map_k_denominator=draw(st.sampled_from(["found", "trec"])),
        zero_relevant=draw(st.sampled_from(["count", "exclude"])),
        pr_points=draw(st.sampled_from([2, 5, 11])),
    )
    rng = np.random.default_rng(seed)
    q = exact_codes(rng, n_q, d, similarity, continuous)
    r = exact_codes(rng, n_r, d, similarity, continuous)
    if draw(st.booleans()):  # duplicate items: more ties
        r = r[rng.integers(0, n_r, n_r)]
    ql, rl = labels(rng, n_q, multilabel), labels(rng, n_r, multilabel)
    return q, r, ql, rl, dict(similarity=similarity, ks=ks, rs=rs, **opts)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_reference(case):
    q, r, ql, rl, opts = case
    ref = reference_evaluate(q, r, ql, rl, **opts)
    for backend in (dict(backend="numpy"), dict(backend="torch", device="cpu")):
        fast = evaluate(q, r, ql, rl, **opts, **backend)
        assert_same(fast, ref)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(1, 40))
def test_first_relevant_matches_the_published_calc_map_k(case, k):
    """map_k_denominator="first-relevant" (stable ties) against the published function's
    definition, query by query, on both backends; k at, below and beyond R and n_r."""
    q, r, ql, rl, opts = case
    ref_map, ref_ap = calc_map_k_reference(q, r, ql, rl, similarity=opts["similarity"], k=k)
    _, ref_all = calc_map_k_reference(q, r, ql, rl, similarity=opts["similarity"])
    for backend in (dict(backend="numpy"), dict(backend="torch", device="cpu")):
        fast = evaluate(q, r, ql, rl, similarity=opts["similarity"], ks=(k,), ties="stable",
                        map_k_denominator="first-relevant", **backend)
        assert fast[f"map@{k}"] == pytest.approx(ref_map, abs=TOL)
        assert fast["per_query_ap"] == pytest.approx(ref_all, abs=TOL)  # k = all: AP@all
        trec = evaluate(q, r, ql, rl, similarity=opts["similarity"], ks=(k,), ties="stable", map_k_denominator="trec",
                        **backend)
        assert fast[f"map@{k}"] >= trec[f"map@{k}"] - TOL  # the relevant items in the top k are among the first min(k, R)


def test_first_relevant_needs_stable_ties():
    from cmr_bench.errors import EvaluationInputError

    q, r = np.eye(2), np.eye(2)
    with pytest.raises(EvaluationInputError, match="ties='stable' only"):
        evaluate(q, r, [0, 1], [0, 1], ks=(1,), map_k_denominator="first-relevant")


@pytest.mark.parametrize("similarity", ["hamming", "cosine", "euclidean"])
@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("ties", ["average", "stable"])
def test_matches_numpy_loop_heavy_ties(similarity, multilabel, ties):
    # Larger sets with heavy ties (4-bit Hamming codes: 5 distinct distances for 400 items),
    # queries without relevant items and k beyond the retrieval set.
    rng = np.random.default_rng(hash((similarity, multilabel, ties)) % 2**32)
    d = 4 if similarity == "hamming" else 6
    q = exact_codes(rng, 25, d, similarity)
    r = exact_codes(rng, 400, d, similarity)
    ql, rl = labels(rng, 25, multilabel, 6, 0.15), labels(rng, 400, multilabel, 6, 0.15)
    if not multilabel:
        ql[:3] = 99  # no relevant item
    else:
        ql[:3] = 0
    kw = dict(similarity=similarity, ks=(1, 7, 50, 399, 1000), rs=(1, 10, 100, 400, 500), ties=ties)
    ref = numpy_loop_evaluate(q, r, ql, rl, **kw)
    fast = evaluate(q, r, ql, rl, **kw)
    assert_same(fast, ref)


def test_numpy_loop_matches_pure_reference():
    # The benchmark baseline is itself checked against the plain-loop reference.
    rng = np.random.default_rng(11)
    for similarity in ("hamming", "euclidean", "cosine"):
        for multilabel in (False, True):
            for ties in ("average", "stable"):
                q = exact_codes(rng, 6, 5, similarity)
                r = exact_codes(rng, 40, 5, similarity)
                ql, rl = labels(rng, 6, multilabel), labels(rng, 40, multilabel)
                kw = dict(similarity=similarity, ks=(3, 17, 60), rs=(5, 40), ties=ties)
                assert_same(numpy_loop_evaluate(q, r, ql, rl, **kw), reference_evaluate(q, r, ql, rl, **kw),
                            keys=["map@all", "map@3", "map@17", "map@60", "p@5", "p@40", "per_query_ap"])


# ------------------------------------------------------------------------------------------ definition of "average"
def _stable_on(q, r, ql, rl, kw):
    def run(perm):
        res = evaluate(q, r[perm], ql, rl[perm], ties="stable", **kw)
        return {k: v for k, v in res.items() if k.startswith(("map@", "p@"))}

    return run


@pytest.mark.parametrize("seed", range(6))
def test_average_equals_mean_over_all_database_orders(seed):
    # Exhaustive: every order of a 6-item database (720), ties broken by position, averaged.
    rng = np.random.default_rng(seed)
    similarity = ["hamming", "cosine", "euclidean"][seed % 3]
    multilabel = seed % 2 == 1
    d = 2 if similarity == "hamming" else 4
    q, r = exact_codes(rng, 3, d, similarity), exact_codes(rng, 6, d, similarity)
    ql, rl = labels(rng, 3, multilabel, 3, 0.5), labels(rng, 6, multilabel, 3, 0.5)
    for denominator in ("found", "trec"):
        kw = dict(similarity=similarity, ks=(1, 2, 3, 4, 5), rs=(1, 2, 3, 4, 5), map_k_denominator=denominator)
        mean, _ = expected_by_permutation(_stable_on(q, r, ql, rl, kw), 6)
        avg = evaluate(q, r, ql, rl, ties="average", **kw)
        for key, value in mean.items():
            assert avg[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("similarity, multilabel", [("hamming", True), ("hamming", False), ("cosine", False)])
def test_average_matches_monte_carlo(similarity, multilabel):
    # Random database orders (ties broken by position) on a tie-heavy set: the mean of the
    # stable results converges to the "average" value; 5 standard errors of tolerance.
    rng = np.random.default_rng(7)
    d = 3 if similarity == "hamming" else 4
    q, r = exact_codes(rng, 8, d, similarity), exact_codes(rng, 150, d, similarity)
    ql, rl = labels(rng, 8, multilabel, 4, 0.3), labels(rng, 150, multilabel, 4, 0.3)
    kw = dict(similarity=similarity, ks=(10, 60), rs=(10, 60))
    mean, sem = expected_by_permutation(_stable_on(q, r, ql, rl, kw), 150, rng=rng, draws=400)
    avg = evaluate(q, r, ql, rl, ties="average", **kw)
    for key in mean:
        assert abs(avg[key] - mean[key]) <= 5 * sem[key] + 1e-12, (key, avg[key], mean[key], sem[key])
    # and the stable value of one fixed order is genuinely different (the test has teeth)
    stable = evaluate(q, r, ql, rl, ties="stable", **kw)
    assert any(abs(stable[k] - avg[k]) > 1e-3 for k in mean)


# ------------------------------------------------------------------------------------------ formulas
def _enumerate_group(c, n, m, r_b, L):
    """Exact expectations by enumerating every placement of the m relevant items among the
    n tied slots: (sum of precision over the first L slots, AP@k with k = c + L "found"
    given `before` = 0.37 from earlier groups)."""
    before = 0.37
    sums, found_ap = [], []
    for rel_slots in itertools.combinations(range(1, n + 1), m):
        rel_slots = sorted(rel_slots)
        prefix = [j for j in rel_slots if j <= L]
        s = sum((r_b + t + 1) / (c + j) for t, j in enumerate(prefix))
        sums.append(s)
        hits = r_b + len(prefix)
        found_ap.append((before + s) / hits if hits else 0.0)
    return float(np.mean(sums)), float(np.mean(found_ap)), before


def test_group_formulas_against_enumeration():
    rnd = random.Random(5)
    for _ in range(300):
        n = rnd.randint(1, 9)
        m = rnd.randint(0, n)
        c = rnd.randint(0, 30)
        r_b = rnd.randint(0, c)
        L = rnd.randint(1, n)
        exp_sum, exp_found, before = _enumerate_group(c, n, m, r_b, L)
        got = expected_prefix_sum(np.array([c]), np.array([n]), np.array([m]), np.array([r_b]), np.array([L]))[0]
        assert got == pytest.approx(exp_sum, abs=1e-12)
        if r_b == 0 and m == 0:
            continue
        got_found = expected_found_ap(np.array([before]), np.array([c]), np.array([n]), np.array([m]),
                                      np.array([r_b]), np.array([L]))[0]
        assert got_found == pytest.approx(exp_found, abs=1e-12)


def _device_formulas(upto):
    """The torch backend's group formulas (cmr_bench.evaluation._torch_backend) on the CPU,
    as numpy-in, float-out functions."""
    import torch

    from cmr_bench.evaluation import _torch_backend as tb

    H = tb.harmonic_pair(torch, upto, "cpu")
    t = lambda v: torch.as_tensor(np.atleast_1d(v), dtype=torch.int64)  # noqa: E731

    def prefix(c, n, m, r_b, L):
        return float(tb.expected_prefix_sum(H, t(c), t(n), t(m), t(r_b), t(L))[0])

    def found(before, c, n, m, r_b, L):
        return float(tb.expected_found_ap(H, torch.tensor([before], dtype=torch.float64), t(c), t(n), t(m), t(r_b),
                                          t(L))[0])

    return prefix, found


def test_device_group_formulas_against_enumeration():
    prefix, found = _device_formulas(60)
    rnd = random.Random(6)
    for _ in range(300):
        n = rnd.randint(1, 9)
        m = rnd.randint(0, n)
        c = rnd.randint(0, 30)
        r_b = rnd.randint(0, c)
        L = rnd.randint(1, n)
        exp_sum, exp_found, before = _enumerate_group(c, n, m, r_b, L)
        assert prefix(c, n, m, r_b, L) == pytest.approx(exp_sum, abs=1e-12)
        if r_b == 0 and m == 0:
            continue
        assert found(before, c, n, m, r_b, L) == pytest.approx(exp_found, abs=1e-12)


def test_closed_form_of_a_whole_group():
    # Issue 15's closed form for a whole group of n items, m relevant, after P items of which Q
    # relevant: (m/n) (n c + (Q+1-c-cP) (H[P+n]-H[P])), c = (m-1)/(n-1), checked in exact
    # fractions against the per-slot definition, and the device formula against both.
    from fractions import Fraction

    prefix, _ = _device_formulas(200_000)
    for P, n, m, Q in [(0, 5, 2, 0), (17, 9, 9, 4), (190_000, 4000, 1500, 20_000), (150_000, 2, 2, 7),
                       (99_999, 37, 5, 3), (12, 1, 1, 3)]:
        per_slot = sum(Fraction(m, n) * (Q + 1 + (Fraction((j - 1) * (m - 1), n - 1) if n > 1 else 0)) / (P + j)
                       for j in range(1, n + 1))
        c = Fraction(m - 1, n - 1) if n > 1 else Fraction(0)
        dH = sum(Fraction(1, P + j) for j in range(1, n + 1))
        closed = Fraction(m, n) * (n * c + (Q + 1 - c - c * P) * dH)
        assert closed == per_slot
        assert prefix(P, n, m, Q, n) == pytest.approx(float(per_slot), rel=1e-12)


def test_group_formula_precision_far_down_the_ranking():
    # Large offsets (c ~ 2e5, as at NUS-WIDE scale): the closed form with harmonic numbers
    # against a direct float64 sum of the per-slot expectation (in exact fractions).
    from fractions import Fraction

    for c, n, m, r_b in [(190_000, 4000, 1500, 20_000), (150_000, 2, 2, 7), (99_999, 37, 5, 3)]:
        direct = sum(Fraction(m, n) * (r_b + 1 + Fraction((j - 1) * (m - 1), n - 1)) / (c + j) for j in range(1, n + 1))
        got = expected_prefix_sum(np.array([c]), np.array([n]), np.array([m]), np.array([r_b]), np.array([n]))[0]
        assert got == pytest.approx(float(direct), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("similarity", ["hamming", "cosine"])
def test_matches_numpy_loop_large(similarity):
    rng = np.random.default_rng(1)
    d = 16 if similarity == "hamming" else 8
    q = exact_codes(rng, 60, d, similarity)
    r = exact_codes(rng, 20_000, d, similarity)
    ql, rl = labels(rng, 60, True, 10, 0.1), labels(rng, 20_000, True, 10, 0.1)
    for ties in ("average", "stable"):
        kw = dict(similarity=similarity, ks=(50, 5000), rs=(100, 1000, 20_000), ties=ties)
        assert_same(evaluate(q, r, ql, rl, memory_budget_mb=16, **kw), numpy_loop_evaluate(q, r, ql, rl, **kw))


def test_reference_helpers_sane():
    assert math.isclose(expected_by_permutation(lambda p: {"x": float(p[0])}, 3)[0]["x"], 1.0)


def test_found_ap_with_a_large_cut_group():
    # NUS-WIDE-like cut at k = 5000 inside a tied group of 20,000 items: the hypergeometric sum
    # is restricted to a Hoeffding window around its mean; compare with the full sum over
    # every x, probabilities from scipy and S, T summed term by term.
    from scipy.stats import hypergeom

    c, n, m, r_b, before = 3_000, 20_000, 8_000, 1_200, 250.0
    L = 5_000 - c
    j = np.arange(1, L + 1)
    S = np.sum(1.0 / (c + j))
    T = np.sum((j - 1) / (c + j))
    x = np.arange(0, min(m, L) + 1)
    p = hypergeom(n, m, L).pmf(x)
    inside = (x / L) * ((r_b + 1) * S + (x - 1) / (L - 1) * T)
    want = float(np.sum(p * (before + inside) / (r_b + x)))
    got = expected_found_ap(np.array([before]), np.array([c]), np.array([n]), np.array([m]), np.array([r_b]),
                            np.array([L]))[0]
    assert got == pytest.approx(want, rel=1e-12)
    _, found = _device_formulas(n + c)
    assert found(before, c, n, m, r_b, L) == pytest.approx(want, rel=1e-12)
