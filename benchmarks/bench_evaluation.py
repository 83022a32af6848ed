"""Evaluator speed and memory at the real dataset sizes, on synthetic codes.

Each case times `evaluate` (pytest-benchmark when enabled, else one timed run) and, in the
same run, two comparisons recorded in the end-of-run table and in benchmark.extra_info:

* reference: the per-query numpy loop of tests/eval_reference.py (one distance row and one
  argsort per query, the way published evaluation code is written, with the same tie rule),
  timed on a subset of the queries and scaled linearly to all of them ("ref_subset");
* bound: the similarity / distance matrix alone, computed chunk by chunk
  (cmr_bench.evaluation.profile.matrix_time).

Targets (docs/evaluation.md): Hamming map@all >= 5x faster than the reference and within 3x
of the bound; cosine map@all no slower than the reference; peak memory < 2 GiB at NUS-WIDE
scale. These are recorded, not asserted (timings depend on the machine), except memory.

Also, in the same run:
* test_torch_backend_vs_numpy: the torch backend (the device-resident path, here on the CPU)
  against the numpy backend, on the same queries (ratio);
* test_cuda_against_sketch (only where CUDA is visible): `evaluate` on the GPU against a
  minimal device-resident sketch of map@all (target: within 2x), torchmetrics RetrievalMAP
  (when importable) and a per-query torch loop on the GPU;
* test_peak_memory_*: encode-free evaluate time and peak RSS of a whole `cmr-bench eval`
  process at NUS-WIDE sizes (docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cmr_bench.evaluation import evaluate
from cmr_bench.evaluation._numpy_backend import single_threaded_blas
from cmr_bench.evaluation.profile import matrix_time

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from eval_reference import numpy_loop_evaluate  # noqa: E402


def make_real(n_q, n_r, dim, n_classes, seed=0):
    """Class-structured real-valued codes (prototype + noise), single-label."""
    rng = np.random.default_rng(seed)
    proto = rng.normal(size=(n_classes, dim))
    ql, rl = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_r)
    q = (proto[ql] + 1.5 * rng.normal(size=(n_q, dim))).astype(np.float32)
    r = (proto[rl] + 1.5 * rng.normal(size=(n_r, dim))).astype(np.float32)
    return q, r, ql, rl


def make_hash(n_q, n_r, bits, n_labels, mean_labels, seed=0):
    """Multi-hot labels (>= 1 per item, about `mean_labels`), +-1 codes: sign of the sum of the
    item's label prototypes plus noise (so that AP is far from chance and distances spread)."""
    rng = np.random.default_rng(seed)

    def labels(n):
        y = (rng.random((n, n_labels)) < (mean_labels - 1) / n_labels).astype(np.int64)
        y[np.arange(n), rng.integers(0, n_labels, n)] = 1
        return y

    proto = rng.normal(size=(n_labels, bits)).astype(np.float32)
    ql, rl = labels(n_q), labels(n_r)
    q = np.sign(ql.astype(np.float32) @ proto + 1.5 * rng.normal(size=(n_q, bits)).astype(np.float32))
    r = np.sign(rl.astype(np.float32) @ proto + 1.5 * rng.normal(size=(n_r, bits)).astype(np.float32))
    q[q == 0] = 1
    r[r == 0] = 1
    return q.astype(np.int8), r.astype(np.int8), ql, rl


CASES = {
    # name: (maker, args, similarity, evaluated metrics, reference subset size)
    "wikipedia_cosine": (make_real, (693, 693, 128, 10), "cosine", dict(ks=(), rs=()), 693),
    "wikipedia_cosine_runner": (make_real, (693, 693, 128, 10), "cosine",
                                dict(ks=(50,), rs=tuple(range(50, 693, 50))), 693),
    "nuswide10k_cosine": (make_real, (28_661, 28_661, 128, 10), "cosine", dict(ks=(), rs=()), 300),
    "mirflickr_hash64": (make_hash, (2_000, 18_015, 64, 24, 3.0), "hamming", dict(ks=(), rs=()), 200),
    "mirflickr_hash64_runner": (make_hash, (2_000, 18_015, 64, 24, 3.0), "hamming",
                                dict(ks=(50,), rs=tuple(range(50, 1001, 50))), 200),
    "nuswide_hash64": (make_hash, (2_100, 193_734, 64, 21, 2.0), "hamming", dict(ks=(), rs=()), 60),
    "nuswide_hash64_map5000": (make_hash, (2_100, 193_734, 64, 21, 2.0), "hamming", dict(ks=(5000,), rs=()), 60),
}
# Best of several rounds: the benchmark machine is shared, and the minimum is the least
# disturbed measurement of each quantity (evaluate, reference, bound alike).
ROUNDS = {"nuswide10k_cosine": 1, "nuswide_hash64": 3, "nuswide_hash64_map5000": 3}

_data_cache: dict = {}


def data(maker, args):
    key = (maker.__name__, args)
    if key not in _data_cache:
        _data_cache.clear()
        _data_cache[key] = maker(*args)
    return _data_cache[key]


def best_time(fn, rounds):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_speed(benchmark, report, case):
    maker, args, similarity, metrics, subset = CASES[case]
    q, r, ql, rl = data(maker, args)
    n_q = len(q)
    evaluate(q[:2], r, ql[:2], rl, similarity=similarity)  # warm-up: imports, caches

    def fast():
        return evaluate(q, r, ql, rl, similarity=similarity, device="cpu", **metrics)

    rounds = ROUNDS.get(case, 7)
    if benchmark.enabled:
        result = benchmark.pedantic(fast, rounds=rounds, iterations=1, warmup_rounds=0)
        t_fast = benchmark.stats.stats.min
    else:
        t0 = time.perf_counter()
        result = benchmark(fast)
        t_fast = time.perf_counter() - t0

    queries = np.linspace(0, n_q - 1, min(subset, n_q)).round().astype(int)
    # The reference's per-query matrix-vector products run on one BLAS thread: on a busy
    # machine multi-threaded small BLAS calls wait for their workers and would inflate the
    # reference's time (and the speedup); single-threaded is the conservative comparison.
    with single_threaded_blas():
        t_ref_subset = best_time(lambda: numpy_loop_evaluate(q, r, ql, rl, similarity=similarity, queries=queries,
                                                             **metrics), 1 if rounds == 1 else 2)
    t_ref = t_ref_subset * n_q / len(queries)
    t_bound = matrix_time(q, r, similarity, device="cpu", repeat=max(3, rounds))
    # the reference must agree on the subset it ran (a benchmark of wrong code is worthless)
    ref = numpy_loop_evaluate(q, r, ql, rl, similarity=similarity, queries=queries[:20], **metrics)
    np.testing.assert_allclose(result["per_query_ap"][queries[:20]], ref["per_query_ap"], atol=1e-9)
    row = {
        "case": case,
        "n_q x n_r": f"{n_q} x {len(r)}",
        "fast_s": t_fast,
        "ref_s (scaled)": t_ref,
        "ref_subset": len(queries),
        "speedup_vs_ref": t_ref / t_fast,
        "bound_s": t_bound,
        "fast_over_bound": t_fast / t_bound,
        "map@all": result["map@all"],
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "case"})
    report(row)


PEAK_WRAPPER = r"""
import json, resource, sys
from cmr_bench.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().split("\n")
hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "peak_rss_mb": hwm / 1024, "cpu_s": use.ru_utime + use.ru_stime}), file=sys.stderr)
"""


def _cli_peak(paths, extra=(), similarity="hamming"):
    """(peak RSS in MB, seconds, stdout) of one `cmr-bench eval` process on the given files;
    the process's own CPU seconds (less sensitive to a busy machine) go to _cli_peak.cpu_s."""
    args = ["eval", "--query", paths[0], "--retrieval", paths[1], "--query-labels", paths[2],
            "--retrieval-labels", paths[3], "--similarity", similarity, "--device", "cpu", "--json", *extra]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *[str(a) for a in args]], capture_output=True, text=True,
                         timeout=1800, check=True)
    seconds = time.perf_counter() - t0
    info = json.loads(out.stderr.strip().splitlines()[-1])
    assert info["code"] == 0
    _cli_peak.cpu_s = info["cpu_s"]
    return info["peak_rss_mb"], seconds, out.stdout


def _save(folder, arrays):
    folder.mkdir()
    paths = []
    for name, a in zip(("q", "r", "ql", "rl"), arrays):
        paths.append(folder / f"{name}.npy")
        np.save(paths[-1], a)
    return paths


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_nuswide_scale(report, tmp_path):
    """Peak RSS (VmHWM) of a whole `cmr-bench eval` process -- python, numpy, scipy, torch, the
    loaded inputs and the evaluation -- on NUS-WIDE-size hashing codes with the default memory
    budget, next to the same process on a tiny input (imports only). getrusage(RUSAGE_CHILDREN)
    would be wrong here: Linux counts the parent's memory copied at fork time into the child."""
    q, r, ql, rl = data(make_hash, CASES["nuswide_hash64"][1])
    big = _save(tmp_path / "big", (q, r, ql, rl))
    tiny = _save(tmp_path / "tiny", (q[:2], r[:10], ql[:2], rl[:10]))
    extra = ["--k", "50", "5000", "--r", *[str(x) for x in range(50, 1001, 50)]]
    peak, seconds, stdout = _cli_peak(big, extra)
    cpu = _cli_peak.cpu_s
    assert "map@5000" in json.loads(stdout)
    base, _, _ = _cli_peak(tiny)
    base_cpu = _cli_peak.cpu_s
    inputs_mb = (q.nbytes + r.nbytes + ql.nbytes + rl.nbytes) / 2**20
    report({"case": "nuswide_hash64_cli_peak_rss", "peak_rss_mb": round(peak), "imports_only_rss_mb": round(base),
            "inputs_mb": round(inputs_mb), "cli_seconds": round(seconds, 1), "cli_cpu_s": round(cpu, 1),
            "imports_only_cpu_s": round(base_cpu, 1), "load_avg_1min": round(os.getloadavg()[0], 1)})
    assert peak < 2048, peak


# ------------------------------------------------------------------ torch backend vs numpy
# Queries timed per case for the backend comparison (the full set where that is quick).
TORCH_SUBSET = {"nuswide10k_cosine": 300}


@pytest.mark.parametrize("case", list(CASES))
def test_torch_backend_vs_numpy(report, case):
    """The torch backend's device-resident path run on the CPU against the numpy backend, on
    the same queries, best of two each: the ratio says what the CPU pays for that path (the
    default on the CPU stays numpy)."""
    maker, args, similarity, metrics, _ = CASES[case]
    q, r, ql, rl = data(maker, args)
    n_q = len(q)
    sub = np.linspace(0, n_q - 1, min(n_q, TORCH_SUBSET.get(case, n_q))).round().astype(int)
    q, ql = q[sub], ql[sub]
    out = {}

    def run(backend):
        out[backend] = evaluate(q, r, ql, rl, similarity=similarity, device="cpu", backend=backend, **metrics)

    t_numpy = best_time(lambda: run("numpy"), 2)
    t_torch = best_time(lambda: run("torch"), 2)
    diff = float(np.max(np.abs(out["numpy"]["per_query_ap"] - out["torch"]["per_query_ap"])))
    assert diff < 1e-9, diff
    report({"case": f"{case} torch(cpu) vs numpy", "n_q x n_r": f"{len(q)} x {len(r)}", "numpy_s": t_numpy,
            "torch_cpu_s": t_torch, "torch_cpu_over_numpy": t_torch / t_numpy, "max_abs_dAP": diff,
            "load_avg_1min": round(os.getloadavg()[0], 1)})


# ------------------------------------------------------------------ CUDA comparisons
def _cuda():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


CUDA_CASES = {
    # name: (maker, args, similarity, per-query loop subset, torchmetrics too)
    "mirflickr_hash64": (make_hash, (2_000, 18_015, 64, 24, 3.0), "hamming", 200, True),
    "nuswide_hash64": (make_hash, (2_100, 193_734, 64, 21, 2.0), "hamming", 100, False),
    "nuswide10k_cosine": (make_real, (28_661, 28_661, 128, 10), "cosine", 500, False),
    "hash64_5000x1M": (make_hash, (5_000, 1_000_000, 64, 21, 2.0), "hamming", 100, False),
}


def _sync():
    import torch

    torch.cuda.synchronize()


def sketch_map(q, r, ql, rl, similarity, rows=256):
    """A minimal device-resident map@all (the yardstick of issue 15), written independently of
    the evaluator: Hamming -- one matmul, one bincount of (query, distance, relevant) keys and
    each distance group's expected AP in closed form; cosine -- matmul, row sort, gather,
    cumsum (no tie handling: continuous scores). Inputs are device tensors; returns per-query AP."""
    import torch

    dev = q.device
    n_q, n_r = len(q), len(r)
    out = torch.empty(n_q, dtype=torch.float64, device=dev)
    multi = ql.dim() == 2
    if similarity == "hamming":
        K = q.shape[1]
        H = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev),
                       torch.cumsum(1.0 / torch.arange(1, n_r + 1, dtype=torch.float64, device=dev), 0)])
    for s in range(0, n_q, rows):
        e = min(n_q, s + rows)
        rel = (ql[s:e] @ rl.T > 0) if multi else (ql[s:e, None] == rl[None, :])
        if similarity == "hamming":
            dist = ((K - q[s:e] @ r.T) * 0.5).long()
            key = (torch.arange(e - s, device=dev)[:, None] * (K + 1) + dist) * 2 + rel.long()
            cnt = torch.bincount(key.view(-1), minlength=(e - s) * (K + 1) * 2).view(e - s, K + 1, 2)
            N, M = cnt.sum(2).double(), cnt[..., 1].double()
            P, Q = torch.cumsum(N, 1) - N, torch.cumsum(M, 1) - M
            c = torch.where(N > 1, (M - 1) / (N - 1).clamp_min(1), torch.zeros_like(N))
            S = H[(P + N).long()] - H[P.long()]
            g = torch.where(M > 0, M / N.clamp_min(1) * (N * c + (Q + 1 - c - c * P) * S), torch.zeros_like(N))
            out[s:e] = g.sum(1) / M.sum(1).clamp_min(1)
        else:
            order = torch.sort(q[s:e] @ r.T, dim=1, descending=True).indices
            hit = torch.gather(rel, 1, order).double()
            prec = torch.cumsum(hit, 1) / torch.arange(1, n_r + 1, device=dev, dtype=torch.float64)
            out[s:e] = (prec * hit).sum(1) / hit.sum(1).clamp_min(1)
    return out


def loop_map(q, r, ql, rl, similarity, queries):
    """Per-query loop on the device, as published evaluation code is written (stable order)."""
    import torch

    K = q.shape[1]
    aps = []
    multi = ql.dim() == 2
    for i in queries.tolist():
        score = -(0.5 * (K - r @ q[i])) if similarity == "hamming" else r @ q[i]
        order = torch.argsort(score, descending=True, stable=True)
        rel = ((rl @ ql[i]) > 0) if multi else (rl == ql[i])
        hit = rel[order].double()
        prec = torch.cumsum(hit, 0) / torch.arange(1, len(hit) + 1, device=hit.device, dtype=torch.float64)
        aps.append(float((prec * hit).sum() / hit.sum().clamp_min(1)))
    return aps


def torchmetrics_map(q, r, ql, rl, similarity):
    from torchmetrics.retrieval import RetrievalMAP  # noqa: F401 (ImportError: skipped by caller)

    import torch

    metric = RetrievalMAP().to(q.device)
    K = q.shape[1]
    for s in range(0, len(q), 256):
        e = min(len(q), s + 256)
        score = -(0.5 * (K - q[s:e] @ r.T)) if similarity == "hamming" else q[s:e] @ r.T
        rel = (ql[s:e] @ rl.T > 0) if ql.dim() == 2 else (ql[s:e, None] == rl[None, :])
        idx = torch.arange(s, e, device=q.device)[:, None].expand_as(score)
        metric.update(score.reshape(-1), rel.reshape(-1), indexes=idx.reshape(-1))
    return float(metric.compute())


@pytest.mark.skipif(not _cuda(), reason="no CUDA device visible")
@pytest.mark.parametrize("case", list(CUDA_CASES))
def test_cuda_against_sketch(report, case):
    import torch

    maker, args, similarity, loop_subset, with_tm = CUDA_CASES[case]
    q, r, ql, rl = data(maker, args)
    n_q = len(q)
    code_dtype = torch.float32 if similarity == "hamming" else torch.float64
    dq, dr = (torch.as_tensor(x, dtype=code_dtype).cuda() for x in (q, r))
    if similarity == "cosine":
        dq, dr = dq / dq.norm(dim=1, keepdim=True), dr / dr.norm(dim=1, keepdim=True)
    dql = torch.as_tensor(ql, dtype=torch.float32 if ql.ndim == 2 else torch.int64).cuda()
    drl = torch.as_tensor(rl, dtype=torch.float32 if rl.ndim == 2 else torch.int64).cuda()
    evaluate(q[:2], r, ql[:2], rl, similarity=similarity, device="cuda", ks=())  # warm-up
    sketch_map(dq[:2], dr, dql[:2], drl, similarity)
    _sync()

    def ours():
        out = evaluate(q, r, ql, rl, similarity=similarity, device="cuda", ks=())
        _sync()
        return out

    def sketch():
        out = sketch_map(dq, dr, dql, drl, similarity)
        _sync()
        return out

    result = {}
    t_ours = best_time(lambda: result.update(ours=ours()), 3)
    t_sketch = best_time(lambda: result.update(sketch=sketch()), 3)
    diff = float(np.max(np.abs(result["ours"]["per_query_ap"] - result["sketch"].cpu().numpy())))
    queries = np.linspace(0, n_q - 1, min(n_q, loop_subset)).round().astype(int)
    t0 = time.perf_counter()
    loop_map(dq, dr, dql, drl, similarity, queries)
    _sync()
    t_loop = (time.perf_counter() - t0) * n_q / len(queries)
    row = {"case": f"{case} cuda", "n_q x n_r": f"{n_q} x {len(r)}", "cuda_s": t_ours, "sketch_s": t_sketch,
           "cuda_over_sketch": t_ours / t_sketch, "loop_s (scaled)": t_loop, "loop_over_cuda": t_loop / t_ours,
           "max_abs_dAP_vs_sketch": diff}
    if with_tm:
        try:
            t0 = time.perf_counter()
            torchmetrics_map(dq, dr, dql, drl, similarity)
            _sync()
            row["torchmetrics_s"] = time.perf_counter() - t0
            row["torchmetrics_over_cuda"] = row["torchmetrics_s"] / t_ours
        except ImportError:
            row["torchmetrics_s"] = "not installed"
    report(row)
    assert diff < 1e-9, diff


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_nuswide10k_cosine(report, tmp_path):
    """The same for NUS-WIDE-10k-size real-valued codes: 28,661 x 28,661 cosine (128-d),
    map@all, map@50 and P@R at 50..1000, default budget."""
    q, r, ql, rl = data(make_real, CASES["nuswide10k_cosine"][1])
    big = _save(tmp_path / "big", (q, r, ql, rl))
    tiny = _save(tmp_path / "tiny", (q[:2], r[:10], ql[:2], rl[:10]))
    extra = ["--k", "50", "--r", *[str(x) for x in range(50, 1001, 50)]]
    peak, seconds, stdout = _cli_peak(big, extra, similarity="cosine")
    cpu = _cli_peak.cpu_s
    assert "map@50" in json.loads(stdout)
    base, _, _ = _cli_peak(tiny, similarity="cosine")
    base_cpu = _cli_peak.cpu_s
    inputs_mb = (q.nbytes + r.nbytes + ql.nbytes + rl.nbytes) / 2**20
    report({"case": "nuswide10k_cosine_cli_peak_rss", "peak_rss_mb": round(peak), "imports_only_rss_mb": round(base),
            "inputs_mb": round(inputs_mb), "cli_seconds": round(seconds, 1), "cli_cpu_s": round(cpu, 1),
            "imports_only_cpu_s": round(base_cpu, 1), "load_avg_1min": round(os.getloadavg()[0], 1)})
    assert peak < 2048, peak
