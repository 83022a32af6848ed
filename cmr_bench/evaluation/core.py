"""`evaluate`: mAP@all, mAP@k, P@R, PR curves and per-query AP for cross-modal retrieval.

Conventions and formulas: docs/evaluation.md. In short: queries are processed in chunks sized
from the memory budget. The numpy backend (the CPU) reduces each chunk to tie groups (integer
counts and positions) that _metrics turns into exact float64 metric values; the torch backend
(CUDA, or any torch device) computes the same values on the device and returns only the
per-query results.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cmr_bench.errors import CmrBenchError, EvaluationInputError
from cmr_bench.evaluation import _metrics
from cmr_bench.evaluation._inputs import (
    DENOMINATORS,
    SIMILARITIES,
    TIE_MODES,
    ZERO_RELEVANT,
    check_choice,
    check_positive_ints,
    prepare,
)

DEFAULT_MEMORY_BUDGET_MB = 512
BACKENDS = ("auto", "numpy", "torch")


def evaluate(
    query,
    retrieval,
    query_labels,
    retrieval_labels,
    *,
    similarity: str = "cosine",
    ks=(50,),
    rs=(),
    ties: str = "average",
    device: str = "auto",
    map_k_denominator: str = "found",
    zero_relevant: str = "count",
    memory_budget_mb: float | None = None,
    pr_points: int = 11,
    backend: str = "auto",
) -> dict[str, Any]:
    """Evaluate retrieval of `retrieval` items for each `query` (codes as n x d arrays or tensors).

    similarity: "cosine" (real codes), "hamming" (binary codes, +-1 or 0/1) or "euclidean".
    ks: cut-offs k for map@k; rs: cut-offs R for p@R (precision among the top R).
    ties: "average" (exact expectation over random orders inside tied groups) or "stable"
        (ties broken by retrieval index).
    device: "auto" (CUDA when visible, else CPU), "cpu" or "cuda[:i]".
    map_k_denominator: "found" (relevant items found in the top k; DJSRH/DSCMR convention),
        "trec" (min(k, R)), or "first-relevant": precision at each of the first min(k, R)
        relevant items wherever they rank, over min(k, R) (the PyTorch `calc_map_k` of DCMH/SSAH
        ports); "first-relevant" needs ties="stable".
    zero_relevant: "count" (queries without relevant items score 0 and count) or "exclude".
    memory_budget_mb: working memory per chunk of queries (beyond the inputs themselves);
        default 512 MB, and on a GPU half of the device's free memory.
    pr_points: recall levels of the interpolated PR curve for real-valued codes (0, 1/(P-1), .., 1).
    backend: "auto" (numpy on the CPU, torch on CUDA), or force "numpy" (CPU; device "auto" then
        means the CPU) / "torch" (any device).

    Returns a dict: "map@all", "map@<k>", "p@<R>" (floats), "pr_curve" (dict of lists),
    "per_query_ap" (float64 array; NaN for excluded queries), "n_queries" (queries averaged),
    "n_zero_relevant", "n_retrieval", "similarity", "ties", "map_k_denominator", "zero_relevant".
    """
    check_choice(similarity, SIMILARITIES, "similarity")
    check_choice(ties, TIE_MODES, "tie mode")
    check_choice(map_k_denominator, DENOMINATORS, "map@k denominator")
    check_choice(zero_relevant, ZERO_RELEVANT, "zero-relevant rule")
    if map_k_denominator == "first-relevant" and ties != "stable":
        # its cut falls at the k-th relevant item, not at a rank: the tie-averaged form would need
        # the order statistics of every cut group; the published code sorts (one order) anyway
        raise EvaluationInputError("map@k denominator 'first-relevant' is defined for ties='stable' only")
    check_choice(backend, BACKENDS, "evaluation backend")
    ks = check_positive_ints(ks, "ks")
    rs = check_positive_ints(rs, "rs")
    if isinstance(pr_points, bool) or not isinstance(pr_points, (int, np.integer)) or pr_points < 2:
        raise EvaluationInputError(f"pr_points must be an integer >= 2, got {pr_points!r}")
    try:
        budget = DEFAULT_MEMORY_BUDGET_MB if memory_budget_mb is None else float(memory_budget_mb)
    except (TypeError, ValueError):
        budget = float("nan")
    if not budget > 0:
        raise EvaluationInputError(f"memory_budget_mb must be a positive number, got {memory_budget_mb!r}")

    from cmr_bench.seeding import resolve_device

    # The numpy backend is the CPU backend: with it, "auto" means the CPU (an explicit "cuda"
    # stays an error below).
    dev = "cpu" if backend == "numpy" and device == "auto" else resolve_device(device)
    prep = prepare(query, retrieval, query_labels, retrieval_labels, similarity)
    if backend == "auto":
        backend = "numpy" if dev == "cpu" else "torch"
    if backend == "numpy":
        if dev != "cpu":
            raise EvaluationInputError(f"the numpy backend runs on the CPU only, not on device '{dev}'")
        from cmr_bench.evaluation._numpy_backend import NumpyBackend

        be = NumpyBackend(prep, ties)
    else:
        from cmr_bench.evaluation._torch_backend import TorchBackend

        be = TorchBackend(prep, ties, dev, ks, rs, map_k_denominator, pr_points)
        if memory_budget_mb is None and dev.startswith("cuda"):
            budget = device_budget_mb(dev)

    hamming = similarity == "hamming"
    n_q = prep.n_q
    per = {"ap": np.zeros(n_q)}
    for k in ks:
        per[f"ap@{k}"] = np.zeros(n_q)
    for r in rs:
        per[f"p@{r}"] = np.zeros(n_q)
    R = np.zeros(n_q, np.int64)
    if hamming:
        pr_prec = np.zeros((n_q, prep.dim + 1))
        pr_rec = np.zeros((n_q, prep.dim + 1))
    else:
        pr_prec = np.zeros((n_q, pr_points))

    rows = chunk_rows(n_q, be.bytes_per_row(), budget, be.max_rows())
    for s, e, chunk in run_chunks(be, n_q, rows):
        if isinstance(chunk, dict):  # torch: metrics computed on the device
            out = chunk
            R[s:e] = out.pop("R")
            if hamming:
                pr_prec[s:e], pr_rec[s:e] = out.pop("pr_prec"), out.pop("pr_rec")
        else:
            groups, N, M = chunk
            out = _metrics.chunk_metrics(groups, ks, rs, map_k_denominator, None if hamming else pr_points)
            R[s:e] = groups.R
            if hamming:
                pr_prec[s:e], pr_rec[s:e] = _metrics.radius_curve(N, M)
        for key, values in out.items():
            if key == "pr":
                pr_prec[s:e] = values
            else:
                per[key][s:e] = values

    has_rel = R > 0
    counted = has_rel if zero_relevant == "exclude" else np.ones(n_q, bool)
    n_counted = int(counted.sum())

    def mean(values):
        return float(values[counted].mean()) if n_counted else float("nan")

    result: dict[str, Any] = {"map@all": mean(per["ap"])}
    for k in ks:
        result[f"map@{k}"] = mean(per[f"ap@{k}"])
    for r in rs:
        result[f"p@{r}"] = mean(per[f"p@{r}"])
    result["pr_curve"] = _pr_summary(hamming, pr_prec, pr_rec if hamming else None, has_rel, pr_points, prep.dim)
    per_query_ap = per["ap"].copy()
    per_query_ap[~counted] = np.nan
    result.update(
        per_query_ap=per_query_ap,
        n_queries=n_counted,
        n_zero_relevant=int((~has_rel).sum()),
        n_retrieval=prep.n_r,
        similarity=similarity,
        ties=ties,
        map_k_denominator=map_k_denominator,
        zero_relevant=zero_relevant,
    )
    return result


def _pr_summary(hamming, precision, recall, has_rel, points, bits):
    """Mean curve over queries with at least one relevant item (recall is undefined otherwise).
    Hamming precision at a radius averages the queries that retrieve something within it."""
    if hamming:
        curve = {"radius": list(range(bits + 1))}
        if has_rel.any():
            rec = recall[has_rel].mean(axis=0)
            defined = ~np.isnan(precision[has_rel])
            counts = defined.sum(axis=0)
            sums = np.where(defined, precision[has_rel], 0.0).sum(axis=0)
            prec = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        else:
            rec = prec = np.full(bits + 1, np.nan)
    else:
        curve = {}
        rec = np.arange(points) / (points - 1)
        prec = precision[has_rel].mean(axis=0) if has_rel.any() else np.full(points, np.nan)
    curve["recall"] = [float(v) for v in rec]
    curve["precision"] = [float(v) for v in prec]
    return curve


def device_budget_mb(device: str) -> float:
    """Half of the CUDA device's free memory, in MB: the chunk size on a GPU follows the
    device, not the host budget (the rest is headroom for the allocator and other tensors)."""
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return 0.5 * free / 2**20  # chunk_rows still takes at least one query


def chunk_rows(n_q: int, bytes_per_row: int, budget_mb: float, max_rows: int) -> int:
    """Queries per chunk so that one chunk's working set stays within the budget (>= 1)."""
    rows = int(budget_mb * 2**20 // max(1, bytes_per_row))
    return max(1, min(rows, n_q, max_rows))


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def run_chunks(be, n_q: int, rows: int):
    """Yield (start, end, chunk result) over all queries; on a CUDA out-of-memory error the
    chunk is halved and retried."""
    s = 0
    while s < n_q:
        e = min(n_q, s + rows)
        out = None
        try:
            out = be.chunk(s, e)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if e - s <= 1:
                raise CmrBenchError(f"out of memory on {getattr(be, 'device', 'the device')} even with one query per chunk "
                                    f"({be.p.n_r} retrieval items); use --device cpu") from None
        if out is None:  # out of memory: the failed chunk's tensors are released by now
            rows = max(1, (e - s) // 2)
            _empty_cache()
            continue
        yield s, e, out
        s = e


def _empty_cache():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def to_jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """The result with plain JSON types: arrays become lists, numpy scalars python numbers,
    NaN/Inf become None. Same keys."""
    return {key: _plain(value) for key, value in result.items()}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
