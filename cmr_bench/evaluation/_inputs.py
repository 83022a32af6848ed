"""Validation and preparation of evaluator inputs. Every problem is one EvaluationInputError line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr_bench.errors import EvaluationInputError, UnknownNameError

SIMILARITIES = ("cosine", "hamming", "euclidean")
TIE_MODES = ("average", "stable")
DENOMINATORS = ("found", "trec", "first-relevant")
ZERO_RELEVANT = ("count", "exclude")
# Single-label data with at most this many classes joins the Hamming count matmul as one-hot
# columns; more classes are compared directly.
ONE_HOT_MAX_CLASSES = 64


def as_numpy(x, what: str) -> np.ndarray:
    """numpy array from a numpy array, torch tensor (any device) or array-like."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        t = x.detach()
        if t.is_floating_point() and t.dtype.itemsize < 4:  # float16 / bfloat16 have no numpy twin
            t = t.float()
        return t.cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise EvaluationInputError(f"{what}: cannot be read as an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise EvaluationInputError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _check_codes(x: np.ndarray, what: str) -> None:
    if x.ndim != 2:
        raise EvaluationInputError(f"{what} must be a 2-D array (n x d), got shape {x.shape}")
    if x.shape[0] == 0:
        raise EvaluationInputError(f"{what} are empty (0 rows)")
    if x.shape[1] == 0:
        raise EvaluationInputError(f"{what} have 0 columns")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise EvaluationInputError(f"{what} contain NaN or Inf ({bad} rows)")


def _check_labels(y: np.ndarray, n: int, what: str, codes_what: str) -> None:
    if y.ndim not in (1, 2):
        raise EvaluationInputError(f"{what} must be 1-D (single-label) or 2-D multi-hot, got shape {y.shape}")
    if len(y) != n:
        raise EvaluationInputError(f"{what} have {len(y)} rows but {codes_what} have {n}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise EvaluationInputError(f"{what} contain NaN or Inf")
    if y.ndim == 1:
        if y.dtype.kind == "f" and not (y == np.round(y)).all():
            raise EvaluationInputError(f"{what} must be integer class ids (1-D) or a 0/1 multi-hot matrix (2-D)")
    else:
        if y.shape[1] == 0:
            raise EvaluationInputError(f"{what} have 0 label columns")
        if not ((y == 0) | (y == 1)).all():
            raise EvaluationInputError(f"{what}: a 2-D label matrix must be multi-hot (only 0 and 1)")


def to_pm1(x: np.ndarray, what: str) -> np.ndarray:
    """Binary codes as float32 +-1: +-1 codes as they are, {0,1} codes as 2x-1."""
    if x.dtype == bool:
        return np.where(x, 1.0, -1.0).astype(np.float32)
    if ((x == 1) | (x == -1)).all():
        return x.astype(np.float32)
    if ((x == 0) | (x == 1)).all():
        return (2.0 * x - 1.0).astype(np.float32)
    bad = x[~((x == 1) | (x == -1) | (x == 0))]
    example = f" (e.g. {bad.flat[0]:g})" if bad.size else " (a mix of 0 and -1)"
    raise EvaluationInputError(f"hamming similarity needs binary codes (+-1 or 0/1); {what} hold other values{example}")


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct rows, inverse) when `x` has bit-identical duplicate rows, else None.

    Scoring each distinct row once makes duplicates tie exactly: BLAS kernels can round the
    same dot product differently at different columns, which would break true ties.
    Rows are hashed exactly (integer arithmetic on their bytes) and hash groups verified.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    words = x.view(np.uint64)
    mult = np.random.default_rng(20080330).integers(1, 2**63, size=x.shape[1], dtype=np.uint64) | np.uint64(1)
    h = (words * mult).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return None
    if not (x == x[first[inverse]]).all():  # a 64-bit hash collision: do it the slow way
        u, inverse = np.unique(x, axis=0, return_inverse=True)
        return (u, inverse.ravel()) if len(u) < len(x) else None
    return x[first], inverse.ravel()


@dataclass
class Prepared:
    similarity: str
    n_q: int
    n_r: int
    dim: int
    query: np.ndarray  # cosine: unit rows (float64); euclidean: float64; hamming: +-1 float32
    retrieval: np.ndarray  # same; for cosine/euclidean only the distinct rows (see r_inverse)
    r_inverse: np.ndarray | None  # retrieval item -> row of `retrieval`, or None (all distinct)
    r_sqnorm: np.ndarray | None  # euclidean: squared norms of `retrieval` rows
    multilabel: bool
    q_labels: np.ndarray  # single: int64 dense class ids; multi: float32 0/1
    r_labels: np.ndarray
    n_classes: int
    max_shared: int  # multi-label: most labels a query and an item can share


def check_choice(value, known, what):
    if value not in known:
        raise UnknownNameError(what, str(value), known)
    return value


def check_positive_ints(values, what: str) -> tuple[int, ...]:
    if values is None:
        return ()
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (values,)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
            raise EvaluationInputError(f"{what} must be positive integers, got {v!r}")
        out.append(int(v))
    return tuple(dict.fromkeys(out))


def prepare(query, retrieval, query_labels, retrieval_labels, similarity: str) -> Prepared:
    q = as_numpy(query, "query codes")
    r = as_numpy(retrieval, "retrieval codes")
    ql = as_numpy(query_labels, "query labels")
    rl = as_numpy(retrieval_labels, "retrieval labels")
    _check_codes(q, "query codes")
    _check_codes(r, "retrieval codes")
    if q.shape[1] != r.shape[1]:
        raise EvaluationInputError(f"query codes have {q.shape[1]} columns but retrieval codes have {r.shape[1]}")
    _check_labels(ql, len(q), "query labels", "query codes")
    _check_labels(rl, len(r), "retrieval labels", "retrieval codes")
    if ql.ndim != rl.ndim:
        kinds = {1: "single-label (1-D)", 2: "multi-hot (2-D)"}
        raise EvaluationInputError(f"labels of different kinds: query labels are {kinds[ql.ndim]}, retrieval labels {kinds[rl.ndim]}")
    multilabel = ql.ndim == 2
    if multilabel:
        if ql.shape[1] != rl.shape[1]:
            raise EvaluationInputError(f"query labels have {ql.shape[1]} label columns but retrieval labels have {rl.shape[1]}")
        qlab = ql.astype(np.float32)
        rlab = rl.astype(np.float32)
        n_classes = ql.shape[1]
        max_shared = int(min(qlab.sum(axis=1).max(), rlab.sum(axis=1).max()))
    else:
        classes, dense = np.unique(np.concatenate([ql.astype(np.int64), rl.astype(np.int64)]), return_inverse=True)
        dense = dense.ravel()
        qlab, rlab = dense[: len(ql)], dense[len(ql):]
        n_classes, max_shared = len(classes), 1

    inverse = sqnorm = None
    if similarity == "hamming":
        qc, rc = to_pm1(q, "query codes"), to_pm1(r, "retrieval codes")
    else:
        qc, rc = q.astype(np.float64), r.astype(np.float64)
        if similarity == "cosine":
            qc, rc = _unit_rows(qc), _unit_rows(rc)
        dedup = unique_rows(rc)
        if dedup is not None:
            rc, inverse = dedup
        if similarity == "euclidean":
            sqnorm = np.einsum("ij,ij->i", rc, rc)
    return Prepared(similarity, len(q), len(r), q.shape[1], qc, rc, inverse, sqnorm, multilabel, qlab, rlab, n_classes, max_shared)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (cosine 0 with everything)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0)[:, None]
