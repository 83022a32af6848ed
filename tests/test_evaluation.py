"""Evaluator: hand-computed cases for every metric and tie mode, options, inputs, JSON.

Property tests against the slow reference: test_evaluation_properties.py; backends, chunking,
memory and devices: test_evaluation_backends.py; CLI: test_evaluation_cli.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cmr_bench.errors import CmrBenchError, EvaluationInputError, UnknownNameError
from cmr_bench.evaluation import evaluate, to_jsonable

BACKENDS = [dict(backend="numpy"), dict(backend="torch", device="cpu")]


def approx(x, rel=0, abs=1e-12):
    return pytest.approx(x, rel=rel, abs=abs)


# ------------------------------------------------------------------------------------------
# Case A: cosine, one query, no ties.
# Retrieval items are unit vectors at angles 0,10,...,50 degrees from the query, stored in a
# shuffled index order; ranked by decreasing cosine the relevance pattern is
#     rank: 1 2 3 4 5 6
#     rel:  1 0 1 0 0 1        (R = 3)
#   AP@all = (1/1 + 2/3 + 3/6) / 3                 = 0.722222...
#   AP@3 "found" = (1/1 + 2/3) / 2 (found 2)        = 0.833333...
#   AP@3 "trec"  = (1/1 + 2/3) / min(3, 3)          = 0.555555...
#   AP@1 = 1;  AP@10 (k > n_r) = AP@all
#   P@2 = 1/2, P@4 = 2/4, P@10 = 3/10 (denominator is always R = 10)
#   11-point PR: precision at the relevant items is (recall 1/3: 1), (2/3: 2/3), (1: 1/2);
#   interpolated precision at level l = max precision at recall >= l:
#   levels 0..0.3 -> 1, 0.4..0.6 -> 2/3, 0.7..1.0 -> 1/2
# ------------------------------------------------------------------------------------------
def case_a():
    angles = np.radians([0, 10, 20, 30, 40, 50])
    rel = np.array([1, 0, 1, 0, 0, 1])
    perm = np.array([3, 0, 5, 1, 4, 2])  # item perm[i] is stored at index i
    retrieval = np.stack([np.cos(angles), np.sin(angles)], 1)[perm] * 3.0  # scale is irrelevant
    labels = np.where(rel[perm] == 1, 7, 2)
    return np.array([[2.0, 0.0]]), retrieval, np.array([7]), labels


@pytest.mark.parametrize("opts", BACKENDS)
@pytest.mark.parametrize("ties", ["average", "stable"])
def test_case_a_cosine_no_ties(opts, ties):
    q, r, ql, rl = case_a()
    res = evaluate(q, r, ql, rl, similarity="cosine", ks=(3, 1, 10), rs=(2, 4, 10), ties=ties, **opts)
    assert res["map@all"] == approx((1 + 2 / 3 + 3 / 6) / 3)
    assert res["map@3"] == approx((1 + 2 / 3) / 2)
    assert res["map@1"] == approx(1.0)
    assert res["map@10"] == approx(res["map@all"])
    assert res["p@2"] == approx(0.5) and res["p@4"] == approx(0.5) and res["p@10"] == approx(0.3)
    expected_pr = [1, 1, 1, 1, 2 / 3, 2 / 3, 2 / 3, 1 / 2, 1 / 2, 1 / 2, 1 / 2]
    assert res["pr_curve"]["recall"] == approx([i / 10 for i in range(11)])
    assert res["pr_curve"]["precision"] == approx(expected_pr)
    trec = evaluate(q, r, ql, rl, ks=(3,), ties=ties, map_k_denominator="trec", **opts)
    assert trec["map@3"] == approx((1 + 2 / 3) / 3)
    assert isinstance(res["map@all"], float) and isinstance(res["p@2"], float)
    assert res["per_query_ap"].dtype == np.float64 and res["per_query_ap"].shape == (1,)
    assert res["n_queries"] == 1 and res["similarity"] == "cosine" and res["ties"] == ties


def test_euclidean_ranks_by_distance():
    # Same geometry as case A: at equal norms, Euclidean order = cosine order.
    q, r, ql, rl = case_a()
    r = r / 3.0
    q = q / 2.0
    a = evaluate(q, r, ql, rl, similarity="euclidean", ks=(3,), rs=(2,))
    assert a["map@all"] == approx((1 + 2 / 3 + 3 / 6) / 3)
    assert a["map@3"] == approx((1 + 2 / 3) / 2)


# ------------------------------------------------------------------------------------------
# Case B: Hamming with ties, K = 4 bits, query 1111. Items by index:
#   idx: 0    1    2    3    4
#   d:   1    0    1    2    1
#   rel: 0    0    1    1    1          (R = 3)
# Tied groups in rank order: d=0 {1} (c=0, n=1, m=0); d=1 {0,2,4} (c=1, n=3, m=2, r_b=0);
# d=2 {3} (c=4, n=1, m=1, r_b=2).
#
# ties="stable" (ties by index): ranking 1,0,2,4,3 -> relevant at ranks 3,4,5:
#   AP@all = (1/3 + 2/4 + 3/5) / 3 = 0.477777...
#   AP@3 found = (1/3) / 1 = 1/3;  P@3 = 1/3
# ties="average": the d=1 group occupies ranks 2..4; by enumerating where its non-relevant
# item sits: rank 2 -> 1/3+2/4 = 5/6; rank 3 -> 1/2+2/4 = 1; rank 4 -> 1/2+2/3 = 7/6;
#   mean = 1 (the closed form (m/n)[(r_b+1)S + (m-1)/(n-1) T] with S = 1/2+1/3+1/4,
#   T = 0/2+1/3+2/4 gives (2/3)(13/12 + 5/12) = 1 as well); the d=2 item adds 3/5:
#   AP@all = (1 + 3/5) / 3 = 0.533333...
#   P@3: 0 + expected relevant in the first 2 of the 3 tied slots 2*(2/3) -> (4/3)/3 = 4/9
#   AP@3 found: X = relevant among ranks 2,3 ~ Hypergeometric(3, 2, 2): X=1 w.p. 2/3
#     (expected precision 1/2 * (1/2 + 1/3) = 5/12, divided by 1), X=2 w.p. 1/3
#     ((1/2 + 2/3) / 2 = 7/12)  ->  2/3*5/12 + 1/3*7/12 = 17/36
#     (not the ratio of expectations, ((2/3)(5/12)+(1/3)(7/6)) / (4/3) = 1/2)
#   AP@3 trec: expected sum over ranks 2,3 = (2/3)(1/2 + 1/2) = 2/3 -> (2/3)/3 = 2/9
# PR by radius r (tie-independent): r=0: 1 item, 0 relevant -> P 0, recall 0;
#   r=1: 4 items, 2 relevant -> P 1/2, recall 2/3; r>=2: 5 items, 3 relevant -> P 3/5, recall 1
# ------------------------------------------------------------------------------------------
def case_b(zero_one=False):
    q = np.array([[1, 1, 1, 1]])
    r = np.array([[-1, 1, 1, 1], [1, 1, 1, 1], [1, -1, 1, 1], [-1, -1, 1, 1], [1, 1, -1, 1]])
    if zero_one:
        q, r = (q + 1) // 2, (r + 1) // 2
    return q, r, np.array([5]), np.array([0, 0, 5, 5, 5])


@pytest.mark.parametrize("opts", BACKENDS)
@pytest.mark.parametrize("zero_one", [False, True])
def test_case_b_hamming_ties(opts, zero_one):
    q, r, ql, rl = case_b(zero_one)
    kw = dict(similarity="hamming", ks=(3, 50), rs=(3,), **opts)
    st = evaluate(q, r, ql, rl, ties="stable", **kw)
    assert st["map@all"] == approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert st["map@3"] == approx(1 / 3)
    assert st["p@3"] == approx(1 / 3)
    av = evaluate(q, r, ql, rl, ties="average", **kw)
    assert av["map@all"] == approx((1 + 3 / 5) / 3)
    assert av["map@3"] == approx(17 / 36)
    assert av["p@3"] == approx(4 / 9)
    assert av["map@50"] == approx(av["map@all"])  # k > n_r
    trec = evaluate(q, r, ql, rl, ties="average", map_k_denominator="trec", **kw)
    assert trec["map@3"] == approx(2 / 9)
    for res in (st, av):
        pr = res["pr_curve"]
        assert pr["radius"] == [0, 1, 2, 3, 4]
        assert pr["precision"] == approx([0, 1 / 2, 3 / 5, 3 / 5, 3 / 5])
        assert pr["recall"] == approx([0, 2 / 3, 1, 1, 1])


def test_average_is_independent_of_database_order():
    q, r, ql, rl = case_b()
    base = evaluate(q, r, ql, rl, similarity="hamming", ks=(3,), rs=(3,))
    for perm in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        other = evaluate(q, r[perm], ql, rl[perm], similarity="hamming", ks=(3,), rs=(3,))
        for key in ("map@all", "map@3", "p@3"):
            assert other[key] == approx(base[key])


# ------------------------------------------------------------------------------------------
# Case C: multi-label relevance and the zero-relevant rule. Query 0 has labels {0, 2}, query 1
# has label {3} that no retrieval item has. Items (labels): 0 {0}, 1 {1}, 2 {1, 2}, 3 {}.
# Relevant for query 0: items 0 and 2 (sharing label 0, resp. 2).
# Euclidean codes on a line put items at distance 1, 2, 3, 4 from both queries (item 1
# nearest, then 0, 3, 2): query 0 ranks rel as 0 1 0 1 -> AP = (1/2 + 2/4) / 2 = 1/2.
# Query 1 has R = 0: AP 0. "count": map@all = (1/2 + 0)/2 = 1/4; "exclude": 1/2.
# P@2: query 0: 1/2, query 1: 0 -> count 1/4, exclude 1/2.
# ------------------------------------------------------------------------------------------
def case_c():
    q = np.array([[0.0], [0.0]])
    r = np.array([[2.0], [1.0], [4.0], [3.0]])
    ql = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    rl = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    return q, r, ql, rl


@pytest.mark.parametrize("opts", BACKENDS)
def test_case_c_multilabel_and_zero_relevant(opts):
    q, r, ql, rl = case_c()
    c = evaluate(q, r, ql, rl, similarity="euclidean", ks=(2,), rs=(2,), **opts)
    assert c["map@all"] == approx(1 / 4) and c["p@2"] == approx(1 / 4)
    assert c["map@2"] == approx((1 / 2) / 2)  # query 0: found 1 in top 2 with precision 1/2
    assert c["n_queries"] == 2 and c["n_zero_relevant"] == 1
    assert c["per_query_ap"] == approx([1 / 2, 0.0])
    e = evaluate(q, r, ql, rl, similarity="euclidean", ks=(2,), rs=(2,), zero_relevant="exclude", **opts)
    assert e["map@all"] == approx(1 / 2) and e["p@2"] == approx(1 / 2) and e["map@2"] == approx(1 / 2)
    assert e["n_queries"] == 1
    assert e["per_query_ap"][0] == approx(0.5) and math.isnan(e["per_query_ap"][1])
    # the PR curve always leaves out queries without relevant items
    assert c["pr_curve"] == e["pr_curve"]


def test_all_queries_without_relevant_items():
    q, r, _, _ = case_c()
    res = evaluate(q, r, [9, 9], [0, 1, 2, 3], similarity="euclidean", rs=(2,))
    assert res["map@all"] == 0.0 and res["p@2"] == 0.0
    ex = evaluate(q, r, [9, 9], [0, 1, 2, 3], similarity="euclidean", zero_relevant="exclude")
    assert math.isnan(ex["map@all"]) and ex["n_queries"] == 0
    assert json.loads(json.dumps(to_jsonable(ex)))["map@all"] is None


# ------------------------------------------------------------------------------------------
# Case D: real-valued ties, averaged PR curve. Query (1, 0); items (by index):
#   0: (1, 0) rel, 1: (1, 0) non-rel, 2: (0, 1) rel, 3: (-1, 0) non-rel  -> cosine 1, 1, 0, -1
# Tied top pair (c=0, n=2, m=1): expected precision of its relevant item = (1/2)(1/1 + 1/2)
#   = 3/4; item 2 at rank 3 adds 2/3: AP@all = (3/4 + 2/3) / 2 = 17/24.
#   stable: item 0 first -> (1 + 2/3)/2 = 5/6.
# PR, ties="average", expected counts at cut-offs 1..4: hits 1/2, 1, 2, 2 -> precision
#   1/2, 1/2, 2/3, 1/2 with recall 1/4, 1/2, 1, 1. Interpolated (3 points: 0, 1/2, 1):
#   level 0 -> max all = 2/3; level 1/2 -> 2/3; level 1 -> 2/3.
# PR, ties="stable": precision at relevant items 1 (recall 1/2), 2/3 (recall 1) -> [1, 1, 2/3].
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", BACKENDS)
def test_case_d_real_valued_ties(opts):
    q = np.array([[1.0, 0.0]])
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    ql, rl = [1], [1, 0, 1, 0]
    av = evaluate(q, r, ql, rl, pr_points=3, ks=(1,), rs=(1,), **opts)
    assert av["map@all"] == approx(17 / 24)
    assert av["p@1"] == approx(1 / 2)
    # AP@1 found: X ~ Hypergeometric(2, 1, 1): X=1 w.p. 1/2 (precision 1) -> 1/2
    assert av["map@1"] == approx(1 / 2)
    assert av["pr_curve"]["precision"] == approx([2 / 3, 2 / 3, 2 / 3])
    st = evaluate(q, r, ql, rl, pr_points=3, ties="stable", **opts)
    assert st["map@all"] == approx(5 / 6)
    assert st["pr_curve"]["precision"] == approx([1, 1, 2 / 3])


def test_zero_vector_has_cosine_zero():
    # the all-zero item ties (cosine 0) with the orthogonal item
    q = np.array([[1.0, 0.0]])
    r = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    res = evaluate(q, r, [1], [1, 0, 0])
    # ranking: item 2 (cos 0.707) then the tie {0, 1} at ranks 2..3 with m = 1:
    # expected precision (1/2)(1/2 + 1/3) = 5/12
    assert res["map@all"] == approx(5 / 12)


def test_duplicate_rows_tie_exactly():
    # Random float rows repeated at many positions: BLAS may round their scores differently
    # per column; scoring each distinct row once makes them tie, so "average" is
    # independent of the database order.
    rng = np.random.default_rng(3)
    base = rng.normal(size=(7, 33)).astype(np.float32)
    r = base[rng.integers(0, 7, 300)]
    rl = rng.integers(0, 3, 300)
    q = rng.normal(size=(20, 33))
    ql = rng.integers(0, 3, 20)
    for sim in ("cosine", "euclidean"):
        a = evaluate(q, r, ql, rl, similarity=sim, ks=(10,), rs=(5,))
        perm = rng.permutation(300)
        b = evaluate(q, r[perm], ql, rl[perm], similarity=sim, ks=(10,), rs=(5,))
        for key in ("map@all", "map@10", "p@5"):
            assert b[key] == approx(a[key], abs=1e-12)


# ------------------------------------------------------------------------------------------ result and JSON
def test_result_keys_and_json():
    q, r, ql, rl = case_b()
    res = evaluate(q, r, ql, rl, similarity="hamming", ks=(2, 3, 2), rs=(1, 4))
    assert list(res)[:6] == ["map@all", "map@2", "map@3", "p@1", "p@4", "pr_curve"]
    for key in ("per_query_ap", "n_queries", "similarity", "ties"):
        assert key in res
    js = to_jsonable(res)
    assert list(js) == list(res)
    back = json.loads(json.dumps(js, allow_nan=False))
    assert back["per_query_ap"] == approx(res["per_query_ap"].tolist())
    assert back["pr_curve"]["radius"] == [0, 1, 2, 3, 4]
    assert to_jsonable({"a": np.float32(0.5), "b": np.array([np.nan, 1.0]), "c": (np.int64(3),)}) == {
        "a": 0.5, "b": [None, 1.0], "c": [3]}


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    q, r, ql, rl = case_b()
    a = evaluate(q, r, ql, rl, similarity="hamming")
    b = evaluate(torch.tensor(q, dtype=torch.float16), torch.tensor(r), torch.tensor(ql), torch.tensor(rl),
                 similarity="hamming")
    assert b["map@all"] == approx(a["map@all"])


def test_top_level_lazy_export():
    import cmr_bench

    assert cmr_bench.evaluate is evaluate


# ------------------------------------------------------------------------------------------ bad input
GOOD = dict(query=np.ones((2, 3)), retrieval=np.ones((4, 3)), query_labels=np.array([0, 1]),
            retrieval_labels=np.array([0, 1, 1, 0]))


def _with(**change):
    args = dict(GOOD)
    opts = {k: change.pop(k) for k in list(change) if k not in GOOD}
    args.update(change)
    return args, opts


@pytest.mark.parametrize("change, message", [
    (dict(query=np.ones((2, 3, 1))), "query codes must be a 2-D array"),
    (dict(query=np.ones((0, 3)), query_labels=np.zeros(0, int)), "query codes are empty"),
    (dict(retrieval=np.ones((0, 3)), retrieval_labels=np.zeros(0, int)), "retrieval codes are empty"),
    (dict(retrieval=np.ones((4, 2))), "query codes have 3 columns but retrieval codes have 2"),
    (dict(query_labels=np.array([0, 1, 2])), "query labels have 3 rows but query codes have 2"),
    (dict(retrieval_labels=np.array([0, 1])), "retrieval labels have 2 rows but retrieval codes have 4"),
    (dict(query=np.array([[1.0, np.nan, 0], [1, 1, 1]])), "query codes contain NaN or Inf (1 rows)"),
    (dict(retrieval=np.full((4, 3), np.inf)), "retrieval codes contain NaN or Inf"),
    (dict(query_labels=np.array([[0, 1], [1, 0]])), "labels of different kinds"),
    (dict(query_labels=np.array([[0, 1], [1, 0]]), retrieval_labels=np.ones((4, 3), int)), "label columns"),
    (dict(query_labels=np.array([[0, 2], [1, 0]]), retrieval_labels=np.ones((4, 2), int)), "multi-hot"),
    (dict(query_labels=np.array([0.5, 1])), "integer class ids"),
    (dict(query=np.array([["a", "b", "c"]] * 2)), "expected a numeric array"),
    (dict(query=np.full((2, 3), 0.5), similarity="hamming"), "needs binary codes"),
    (dict(query=np.array([[0, -1, 1], [1, 1, 1]]), similarity="hamming"), "needs binary codes"),
    (dict(ks=(0,)), "ks must be positive integers"),
    (dict(rs=(2.5,)), "rs must be positive integers"),
    (dict(pr_points=1), "pr_points"),
    (dict(memory_budget_mb=0), "memory_budget_mb"),
])
def test_bad_input_is_one_line_error(change, message):
    args, opts = _with(**change)
    with pytest.raises(EvaluationInputError) as info:
        evaluate(**args, **opts)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("opt", [dict(similarity="dot"), dict(ties="random"), dict(map_k_denominator="x"),
                                 dict(zero_relevant="drop"), dict(backend="jax")])
def test_unknown_option_names(opt):
    with pytest.raises(UnknownNameError):
        evaluate(**GOOD, **opt)


def test_cuda_without_gpu_is_an_error(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also runs on GPU machines
    with pytest.raises(CmrBenchError, match="no CUDA device"):
        evaluate(**GOOD, device="cuda")
