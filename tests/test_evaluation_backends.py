"""Evaluator backends, chunking, memory and devices.

There is no GPU in CI: the torch backend (the CUDA code path) is run on the CPU and compared
with the numpy backend; a CUDA test runs only where a GPU is visible.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import cmr_bench.evaluation._numpy_backend as numpy_backend
from cmr_bench.errors import CmrBenchError
from cmr_bench.evaluation import evaluate
from cmr_bench.evaluation._torch_backend import TorchBackend
from test_evaluation_properties import assert_same, exact_codes, labels

torch = pytest.importorskip("torch")


def dataset(similarity, multilabel, n_q=40, n_r=700, d=None, n_classes=6, seed=0, continuous=False):
    rng = np.random.default_rng(seed)
    d = d or (12 if similarity == "hamming" else 8)
    q = exact_codes(rng, n_q, d, similarity, continuous)
    r = exact_codes(rng, n_r, d, similarity, continuous)
    return q, r, labels(rng, n_q, multilabel, n_classes, 0.2), labels(rng, n_r, multilabel, n_classes, 0.2)


CONFIGS = [(s, m, t) for s in ("hamming", "cosine", "euclidean") for m in (False, True) for t in ("average", "stable")]
KW = dict(ks=(1, 50, 650, 5000), rs=(10, 100, 700, 800))


@pytest.mark.parametrize("similarity, multilabel, ties", CONFIGS)
def test_torch_backend_on_cpu_matches_numpy(similarity, multilabel, ties):
    q, r, ql, rl = dataset(similarity, multilabel)
    a = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, backend="numpy", **KW)
    b = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, backend="torch", device="cpu", **KW)
    assert_same(b, a, keys=[k for k in a if k not in ("similarity", "ties", "map_k_denominator", "zero_relevant")],
                tol=1e-12)


@pytest.mark.parametrize("ties", ["average", "stable"])
@pytest.mark.parametrize("duplicates", [False, True])
def test_torch_backend_with_and_without_ties_in_a_chunk(ties, duplicates):
    # Continuous scores give chunks without any tie (the device path then takes singleton
    # groups); duplicated retrieval rows give exact ties in every row.
    q, r, ql, rl = dataset("cosine", True, n_q=30, n_r=400, seed=3, continuous=True)
    if duplicates:
        r[200:], rl[200:] = r[:200], rl[:200]
    a = evaluate(q, r, ql, rl, ties=ties, backend="numpy", **KW)
    b = evaluate(q, r, ql, rl, ties=ties, backend="torch", device="cpu", **KW)
    assert_same(b, a, keys=[k for k in a if k not in ("similarity", "ties", "map_k_denominator", "zero_relevant")],
                tol=1e-12)


@pytest.mark.parametrize("similarity, multilabel, ties", CONFIGS)
def test_chunking_does_not_change_results(similarity, multilabel, ties):
    # A tiny budget forces one query per chunk.
    q, r, ql, rl = dataset(similarity, multilabel, n_q=17, seed=1, continuous=similarity == "cosine")
    a = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, **KW)
    b = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, memory_budget_mb=0.01, **KW)
    assert_same(b, a, keys=["map@all", "map@50", "p@100", "pr_curve", "per_query_ap"], tol=1e-12)


def test_hamming_count_paths_agree(monkeypatch):
    # Single-label data with many classes takes the direct class comparison; huge count
    # tables fall back to a float64 GEMM; a low exactness bound caps the rows per chunk.
    rng = np.random.default_rng(4)
    q, r = rng.integers(0, 2, (30, 10)), rng.integers(0, 2, (500, 10))
    ql, rl = rng.integers(0, 100, 30), rng.integers(0, 100, 500)
    ql[:20] = rl[:20]
    ref = evaluate(q, r, ql, rl, similarity="hamming", backend="torch", device="cpu", **KW)
    a = evaluate(q, r, ql, rl, similarity="hamming", **KW)
    assert_same(a, ref, keys=["map@all", "map@50", "p@100", "pr_curve"], tol=1e-12)
    ql2, rl2 = labels(rng, 30, True, 12, 0.3), labels(rng, 500, True, 12, 0.3)
    ref2 = evaluate(q, r, ql2, rl2, similarity="hamming", **KW)
    monkeypatch.setattr(numpy_backend, "_F32_EXACT", 2000)  # forces float64 counts
    b = evaluate(q, r, ql2, rl2, similarity="hamming", **KW)
    monkeypatch.setattr(numpy_backend, "_F32_EXACT", 1 << 12)  # float32, few rows per chunk
    monkeypatch.setattr(numpy_backend, "_TILE_ELEMENTS", 1000)  # and narrow column tiles
    c = evaluate(q, r, ql2, rl2, similarity="hamming", **KW)
    for res in (b, c):
        assert_same(res, ref2, keys=["map@all", "map@50", "p@100", "pr_curve"], tol=1e-12)


def test_cuda_out_of_memory_halves_the_chunk(monkeypatch):
    q, r, ql, rl = dataset("hamming", True, n_q=23)
    expected = evaluate(q, r, ql, rl, similarity="hamming", **KW)
    sizes = []
    real_chunk = TorchBackend.chunk

    def chunk(self, s, e):
        sizes.append(e - s)
        if e - s > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_chunk(self, s, e)

    monkeypatch.setattr(TorchBackend, "chunk", chunk)
    got = evaluate(q, r, ql, rl, similarity="hamming", backend="torch", device="cpu", **KW)
    assert_same(got, expected, keys=["map@all", "map@50", "p@100", "pr_curve", "per_query_ap"], tol=1e-12)
    assert sizes[:4] == [23, 11, 5, 5] and max(sizes[2:]) <= 5

    def always(self, s, e):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(TorchBackend, "chunk", always)
    with pytest.raises(CmrBenchError, match="out of memory .* even with one query per chunk"):
        evaluate(q, r, ql, rl, similarity="hamming", backend="torch", device="cpu")


def test_other_errors_are_not_retried(monkeypatch):
    def boom(self, s, e):
        raise RuntimeError("not an OOM")

    monkeypatch.setattr(TorchBackend, "chunk", boom)
    q, r, ql, rl = dataset("hamming", False, n_q=4, n_r=20)
    with pytest.raises(RuntimeError, match="not an OOM"):
        evaluate(q, r, ql, rl, similarity="hamming", backend="torch", device="cpu")


@pytest.mark.parametrize("similarity, ties", [("cosine", "average"), ("hamming", "average"), ("hamming", "stable")])
def test_peak_memory_follows_the_budget(similarity, ties):
    # n_q x n_r = 400 x 40,000 would be 128 MB as one float64 matrix; with an 8 MB budget the
    # traced peak stays near inputs + budget (numpy reports its allocations to tracemalloc).
    rng = np.random.default_rng(0)
    n_q, n_r, d = 400, 40_000, 16
    q = rng.normal(size=(n_q, d)).astype(np.float32)
    r = rng.normal(size=(n_r, d)).astype(np.float32)
    if similarity == "hamming":
        q, r = np.sign(q), np.sign(r)
    ql, rl = rng.integers(0, 10, n_q), rng.integers(0, 10, n_r)
    evaluate(q[:2], r[:50], ql[:2], rl[:50], similarity=similarity, ties=ties)  # imports, caches
    inputs = q.nbytes + r.nbytes + ql.nbytes + rl.nbytes
    tracemalloc.start()
    try:
        evaluate(q, r, ql, rl, similarity=similarity, ties=ties, ks=(50,), rs=(100,), memory_budget_mb=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # prepared copies of the inputs (float64 / +-1 codes, labels) are a few times `inputs`
    assert peak < 4 * inputs + 8 * 2**20 + 4 * 2**20, peak / 2**20


def test_device_auto_and_cpu_agree():
    q, r, ql, rl = dataset("cosine", False, continuous=True)
    a = evaluate(q, r, ql, rl, device="auto", **KW)
    b = evaluate(q, r, ql, rl, device="cpu", **KW)
    assert a["map@all"] == pytest.approx(b["map@all"], abs=1e-6)


def test_numpy_backend_with_auto_device_runs_on_the_cpu(monkeypatch):
    # On a GPU machine "auto" resolves to CUDA; the numpy backend then means the CPU, while an
    # explicit "cuda" with the numpy backend stays an error. Simulated here by making CUDA
    # look visible (nothing below touches a CUDA device).
    q, r, ql, rl = dataset("cosine", False, n_q=3, n_r=10)
    expected = evaluate(q, r, ql, rl, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got = evaluate(q, r, ql, rl, backend="numpy")
    assert_same(got, expected, keys=["map@all", "map@50", "per_query_ap"], tol=0)
    with pytest.raises(CmrBenchError, match="numpy backend runs on the CPU only"):
        evaluate(q, r, ql, rl, device="cuda", backend="numpy")


@pytest.mark.cuda
@pytest.mark.parametrize("similarity, multilabel, ties", CONFIGS)
def test_cuda_matches_cpu(similarity, multilabel, ties):
    q, r, ql, rl = dataset(similarity, multilabel, n_q=60, n_r=3000, seed=5, continuous=similarity == "cosine")
    a = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, device="cpu", **KW)
    b = evaluate(q, r, ql, rl, similarity=similarity, ties=ties, device="cuda", **KW)
    assert_same(b, a, keys=["map@all", "map@50", "map@650", "p@10", "p@100", "pr_curve", "per_query_ap"], tol=1e-6)
    c = evaluate(torch.as_tensor(q).cuda(), torch.as_tensor(r).cuda(), torch.as_tensor(ql).cuda(),
                 torch.as_tensor(rl).cuda(), similarity=similarity, ties=ties, device="cuda", memory_budget_mb=1, **KW)
    assert_same(c, a, keys=["map@all", "map@50", "p@100"], tol=1e-6)


def test_gpu_chunks_follow_the_devices_free_memory(monkeypatch):
    # On CUDA the default chunk size comes from torch.cuda.mem_get_info, not the 512 MB host
    # budget; an explicit budget still wins. Simulated on the CPU: CUDA looks visible, the
    # torch backend is built on the CPU, and the device reports room for about 5 queries.
    q, r, ql, rl = dataset("hamming", True, n_q=23)
    expected = evaluate(q, r, ql, rl, similarity="hamming", **KW)
    init, chunk = TorchBackend.__init__, TorchBackend.chunk
    sizes = []

    def cpu_init(self, prep, ties, device, *args, **kwargs):
        assert device == "cuda"
        init(self, prep, ties, "cpu", *args, **kwargs)

    def recording_chunk(self, s, e):
        sizes.append(e - s)
        return chunk(self, s, e)

    per_row = TorchBackend.bytes_per_row(type("P", (), {"p": type("Q", (), {"n_r": 700, "similarity": "hamming"}),
                                                        "ties": "average", "K": 12})())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 5 * per_row, 10 * 2**30))
    monkeypatch.setattr(TorchBackend, "__init__", cpu_init)
    monkeypatch.setattr(TorchBackend, "chunk", recording_chunk)
    got = evaluate(q, r, ql, rl, similarity="hamming", **KW)
    assert sizes == [5, 5, 5, 5, 3]
    assert_same(got, expected, keys=["map@all", "map@50", "p@100", "pr_curve", "per_query_ap"], tol=1e-12)
    sizes.clear()
    evaluate(q, r, ql, rl, similarity="hamming", memory_budget_mb=512, **KW)
    assert sizes == [23]
