"""The lower bound the evaluator is measured against: computing the similarity / distance
matrix alone (no ranking, no metric), chunk by chunk into one reused buffer.

Hamming: 0.5 * (K - B_q B_r^T) in float32, as published hashing code computes it;
cosine: unit rows, float64 inner products; Euclidean: |r|^2 - 2 q.r in float64 (the
evaluator's own score precision).
"""

from __future__ import annotations

import time

import numpy as np


def matrix_time(query, retrieval, similarity: str, device: str = "auto", memory_budget_mb: float = 512,
                repeat: int = 1) -> float:
    """Best of `repeat` wall times (seconds) for the full n_q x n_r matrix."""
    from cmr_bench.evaluation._inputs import as_numpy, to_pm1
    from cmr_bench.seeding import resolve_device

    dev = resolve_device(device)
    q = as_numpy(query, "query codes")
    r = as_numpy(retrieval, "retrieval codes")
    if similarity == "hamming":
        q, r = to_pm1(q, "query codes"), to_pm1(r, "retrieval codes")
        dtype = np.float32
    else:
        q, r = q.astype(np.float64), r.astype(np.float64)
        if similarity == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
            r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)
        dtype = np.float64
    n_q, n_r = len(q), len(r)
    rows = max(1, min(n_q, int(memory_budget_mb * 2**20 // (n_r * np.dtype(dtype).itemsize))))
    K = q.shape[1]
    best = float("inf")
    if dev == "cpu":
        rT = np.ascontiguousarray((-2.0 * r if similarity == "euclidean" else r).T)
        sq = (r * r).sum(axis=1) if similarity == "euclidean" else None
        buf = np.empty((rows, n_r), dtype)
        for _ in range(repeat):
            t0 = time.perf_counter()
            for s in range(0, n_q, rows):
                e = min(n_q, s + rows)
                out = buf[: e - s]
                np.matmul(q[s:e], rT, out=out)
                if similarity == "hamming":
                    out *= -0.5
                    out += 0.5 * K
                elif sq is not None:
                    out += sq
            best = min(best, time.perf_counter() - t0)
        return best
    import torch

    tq = torch.as_tensor(q).to(dev)
    tr = torch.as_tensor(-2.0 * r if similarity == "euclidean" else r).to(dev)
    sq = torch.as_tensor((r * r).sum(axis=1)).to(dev) if similarity == "euclidean" else None
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, n_q, rows):
            out = tq[s: s + rows] @ tr.T
            if similarity == "hamming":
                out = 0.5 * (K - out)
            elif sq is not None:
                out += sq
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best
