"""CPU backend (numpy): turns a chunk of queries into tie groups (see _metrics)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os

import numpy as np

from cmr_bench.evaluation._inputs import ONE_HOT_MAX_CLASSES, Prepared
from cmr_bench.evaluation._metrics import Groups

# Elements (queries x retrieval items) per Hamming tile: large enough for efficient GEMMs,
# small enough that the count pass stays in cache.
_TILE_ELEMENTS = 1 << 19
# Entries of the per-chunk Hamming count table.
_COUNT_TABLE = 1 << 16
# float32 holds integers exactly below 2**24: bounds the combined Hamming count keys.
_F32_EXACT = 1 << 24


@functools.lru_cache(maxsize=1)
def _openblas_local_threads():
    """OpenBLAS's `openblas_set_num_threads_local` (>= 0.3.27) from numpy's bundled library, or
    None. It changes the BLAS thread count of the calling thread only."""
    try:
        base = os.path.dirname(os.path.dirname(np.__file__))
        for path in glob.glob(os.path.join(base, "numpy.libs", "*openblas*")) + glob.glob(
                os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*")):
            fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                return fn
    except (OSError, AttributeError):  # pragma: no cover - other BLAS builds
        pass
    return None


@contextlib.contextmanager
def single_threaded_blas():
    """Run the many small Hamming GEMMs on one BLAS thread. They alternate with single-threaded
    counting; a multi-threaded GEMM per tile then waits for its worker threads to be scheduled,
    which on a busy machine made the count 10x slower (measured). Best effort: a no-op where
    numpy's BLAS is not a recent OpenBLAS."""
    fn = _openblas_local_threads()
    if fn is None:
        yield
        return
    previous = fn(1)
    try:
        yield
    finally:
        fn(previous)


class NumpyBackend:
    name = "numpy"
    device = "cpu"

    def __init__(self, prep: Prepared, ties: str):
        self.p = prep
        self.ties = ties
        p = prep
        if p.similarity == "hamming":
            self.K = p.dim
            if ties == "average":
                self._setup_hamming_counts()
            else:
                self.BrT = np.ascontiguousarray(p.retrieval.T)
                self.W = 2
        elif p.similarity == "cosine":
            self.keyT = np.ascontiguousarray(-p.retrieval.T)  # key = -cosine: smaller ranks first
        else:
            self.keyT = np.ascontiguousarray(-2.0 * p.retrieval.T)  # key = |r|^2 - 2 q.r
        if p.multilabel:
            self.LrT = np.ascontiguousarray(p.r_labels.T)

    # ------------------------------------------------------------------ sizes
    def bytes_per_row(self) -> int:
        """Working bytes per query of a chunk: score/count buffers per retrieval item, plus the
        tie-group arrays (up to one per relevant item) and their metric temporaries."""
        n_r = self.p.n_r
        if self.p.similarity == "hamming":
            bins = (self.K + 1) * (self.W if self.ties == "average" else 2)
            if self.ties == "average":
                return 16 * n_r + 48 * bins
            return 40 * n_r + 96 * n_r + 24 * bins
        return 40 * n_r + 96 * n_r

    def max_rows(self) -> int:
        """Upper bound on queries per chunk: exactness of the float32 count keys, and a count
        table small enough (~512 KiB) for the scattered increments to stay in cache."""
        if self.p.similarity == "hamming" and self.ties == "average":
            bins = (self.K + 1) * self.W
            rows = max(8, _COUNT_TABLE // bins)
            if self.count_dtype == np.float32:
                rows = min(rows, (_F32_EXACT - self.K * self.W - self.p.n_classes - 2) // bins - 1)
            return max(1, rows)
        return 1 << 30

    # ------------------------------------------------------------------ relevance
    def relevance(self, s: int, e: int) -> np.ndarray:
        p = self.p
        if p.multilabel:
            return (p.q_labels[s:e] @ self.LrT) > 0
        return p.q_labels[s:e, None] == p.r_labels[None, :]

    # ------------------------------------------------------------------ chunk
    def chunk(self, s: int, e: int):
        """(Groups, N, M) for queries s..e-1; N, M: per-distance counts (Hamming) or None."""
        if self.p.similarity == "hamming":
            if self.ties == "average":
                N, M = self._hamming_counts(s, e)
                return Groups.from_dense(N, M), N, M
            return self._hamming_stable(s, e)
        return self._real(s, e), None, None

    # ------------------------------------------------------------------ real-valued
    def _keys(self, s: int, e: int) -> np.ndarray:
        key = self.p.query[s:e] @ self.keyT
        if self.p.r_sqnorm is not None:
            key += self.p.r_sqnorm
        if self.p.r_inverse is not None:
            key = key[:, self.p.r_inverse]
        return key

    def _real(self, s: int, e: int) -> Groups:
        key = self._keys(s, e)
        rel = self.relevance(s, e)
        return groups_from_keys(key, rel, self.ties)

    # ------------------------------------------------------------------ hamming
    def _setup_hamming_counts(self):
        """One float GEMM gives, per (query, item), key = row*(K+1)*W + dist*W + shared where
        dist is the Hamming distance and `shared` the number of shared labels (or class match):
            [-(W/2) b_q, f_q, row*(K+1)*W + K*W/2] . [b_r, f_r, 1]
        with b the +-1 codes and f one-hot / multi-hot label rows. All terms are integers
        (W even), so float32 is exact while keys stay below 2**24."""
        p = self.p
        K = self.K
        if p.multilabel:
            self.mode = "features"
            fq, fr = p.q_labels, p.r_labels
            W = p.max_shared + 1
        elif p.n_classes <= ONE_HOT_MAX_CLASSES:
            self.mode = "features"
            eye = np.eye(p.n_classes, dtype=np.float32)
            fq, fr = eye[p.q_labels], eye[p.r_labels]
            W = 2
        else:
            self.mode = "equal"
            fq = np.zeros((p.n_q, 0), np.float32)
            fr = np.zeros((p.n_r, 0), np.float32)
            W = 2
        W += W % 2
        self.W = W
        self.count_dtype = np.float32 if (K + 1) * W * 2 + K * W + fq.shape[1] < _F32_EXACT else np.float64
        dt = self.count_dtype
        self.Fq = fq.astype(dt)
        # row-major: a column tile of the GEMM's right-hand side is one contiguous block
        self.Ra = np.concatenate([p.retrieval.astype(dt), fr.astype(dt), np.ones((p.n_r, 1), dt)], axis=1)

    def _hamming_counts(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        p, K, W = self.p, self.K, self.W
        b = e - s
        dt = self.count_dtype
        bins = (K + 1) * W
        Qa = np.empty((b, self.Ra.shape[1]), dt)
        Qa[:, :K] = -(W // 2) * p.query[s:e]
        Qa[:, K:-1] = self.Fq[s:e]
        Qa[:, -1] = np.arange(b) * bins + K * (W // 2)
        cols = min(p.n_r, max(1024, _TILE_ELEMENTS // b))
        buf = np.empty((b, cols), dt)
        ibuf = np.empty((b, cols), np.intp)
        counts = np.zeros(b * bins, np.int64)
        with single_threaded_blas():
            for c0 in range(0, p.n_r, cols):
                c1 = min(p.n_r, c0 + cols)
                w = c1 - c0
                np.matmul(Qa, self.Ra[c0:c1].T, out=buf[:, :w])
                kb = ibuf[:, :w]
                np.copyto(kb, buf[:, :w], casting="unsafe")
                if self.mode == "equal":
                    kb += p.q_labels[s:e, None] == p.r_labels[None, c0:c1]
                counts += np.bincount(kb.ravel(), minlength=b * bins)
        counts = counts.reshape(b, K + 1, W)
        N = counts.sum(axis=2)
        M = N - counts[:, :, 0]
        return N, M

    def _distances(self, s: int, e: int) -> np.ndarray:
        ip = self.p.query[s:e] @ self.BrT
        dist = (self.K - ip) * 0.5
        return dist.astype(np.uint8 if self.K < 256 else np.uint16 if self.K < 65536 else np.int64)

    def _hamming_stable(self, s: int, e: int):
        b = e - s
        K = self.K
        dist = self._distances(s, e)
        rel = self.relevance(s, e)
        order = np.argsort(dist, axis=1, kind="stable")
        row, pos = np.nonzero(np.take_along_axis(rel, order, axis=1))
        del order
        key = dist.astype(np.intp)
        key *= 2
        key += rel
        key += (np.arange(b, dtype=np.intp) * (2 * (K + 1)))[:, None]
        counts = np.bincount(key.ravel(), minlength=b * 2 * (K + 1)).reshape(b, K + 1, 2)
        N = counts.sum(axis=2)
        M = counts[:, :, 1]
        return Groups.from_items(b, M.sum(axis=1), row, pos), N, M


def groups_from_keys(key: np.ndarray, rel: np.ndarray, ties: str) -> Groups:
    """Tie groups from ranking keys (smaller first) and relevance, one query per row.

    Each row is sorted once; the keys of its relevant items are located in the sorted row by
    binary search, which gives every relevant-holding tie group's start c and size n (rows
    without any tie skip the grouping). Under ties="stable", rows where a relevant item ties
    with another item are re-ranked with a stable sort instead.
    """
    b = key.shape[0]
    R = rel.sum(axis=1).astype(np.int64)
    srt = np.sort(key, axis=1)
    tied_row = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
    total = int(R.sum())
    out_row = np.empty(total, np.int64)
    out_c = np.empty(total, np.int64)
    out_n = np.ones(total, np.int64)
    out_m = np.ones(total, np.int64)
    at = 0
    for i in np.flatnonzero(R):
        kr = key[i, rel[i]]
        kr.sort()
        row = srt[i]
        if not tied_row[i]:
            g = len(kr)
            out_c[at : at + g] = row.searchsorted(kr, side="left")
        else:
            starts = np.flatnonzero(kr[1:] != kr[:-1]) + 1
            starts = np.concatenate((np.zeros(1, np.intp), starts))
            u = kr[starts]
            lo = row.searchsorted(u, side="left")
            n = row.searchsorted(u, side="right") - lo
            if ties == "stable" and n.max() > 1:
                order = np.argsort(key[i], kind="stable")
                lo = np.flatnonzero(rel[i, order])
                n = 1
                m = 1
            else:
                m = np.diff(starts, append=len(kr))
            g = len(lo)
            out_c[at : at + g] = lo
            out_n[at : at + g] = n
            out_m[at : at + g] = m
        out_row[at : at + g] = i
        at += g
    return Groups(b, R, out_row[:at], out_c[:at], out_n[:at], out_m[:at])
