"""`--jobs auto`, the default of run, reproduce and tune: one run per usable core, bounded by free
memory (and a GPU's), longest runs first, results bit-identical to `--jobs 1`."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from cmr_bench.errors import CmrBenchError
from cmr_bench.runner import capacity
from cmr_bench.runner.capacity import available_memory, choose_jobs, jobs_default, parse_jobs
from cmr_bench.runner.estimate import WIKI_PEAK_MB, longest_first, run_peak_bytes

MB = 2**20
GB = 2**30


def runs(*methods):
    return [SimpleNamespace(method=m) for m in methods]


def test_one_job_per_core_when_memory_is_plentiful():
    choice = choose_jobs(runs(*["sdcmr"] * 20), 0, "cpu", cpus=16, memory=64 * GB, gpu_memory=None)
    assert choice.jobs == 16 and choice.cpus == 16 and choice.gpu_jobs is None
    assert "--jobs auto: 16" in choice.describe()


def test_never_more_workers_than_runs():
    assert choose_jobs(runs("cca", "dscmr"), 0, "cpu", cpus=64, memory=64 * GB, gpu_memory=None).jobs == 2
    assert choose_jobs([], 0, "cpu", cpus=64, memory=64 * GB, gpu_memory=None).jobs == 1


def test_memory_bounds_the_count_by_the_largest_pending_run():
    # 0.8 x 2 GB / 577 MB (sdcmr's peak) -> 2 at once, though 64 cores are there
    choice = choose_jobs(runs("cca", "sdcmr", "cca", "cca"), 0, "cpu", cpus=64, memory=2 * GB, gpu_memory=None)
    assert choice.memory_jobs == int(0.8 * 2 * GB // (577 * MB)) == 2
    assert choice.jobs == 2 and "memory for 2 run(s)" in choice.describe()
    # too little memory for even one: still one run at a time, never zero
    assert choose_jobs(runs("sdcmr"), 0, "cpu", cpus=4, memory=10 * MB, gpu_memory=None).jobs == 1


def test_the_dataset_size_raises_each_runs_peak():
    small = choose_jobs(runs(*["cca"] * 8), 0, "cpu", cpus=8, memory=8 * GB, gpu_memory=None)
    big = choose_jobs(runs(*["cca"] * 8), 1 * GB, "cpu", cpus=8, memory=8 * GB, gpu_memory=None)
    assert small.jobs == 8 and big.jobs == 1  # 270 MB + 4 x 1 GB of features per run
    assert run_peak_bytes("cca", GB) == 270 * MB + 4 * GB


def test_unmeasured_methods_count_as_the_largest_figure():
    assert run_peak_bytes("my-new-method") == max(WIKI_PEAK_MB.values()) * MB


def test_cores_are_divided_by_the_threads_each_run_uses():
    assert choose_jobs(runs(*["cca"] * 8), 0, "cpu", threads=4, cpus=16, memory=None, gpu_memory=None).jobs == 4
    assert choose_jobs(runs(*["cca"] * 8), 0, "cpu", threads=4, cpus=2, memory=None, gpu_memory=None).jobs == 1


def test_a_gpu_bounds_the_runs_that_share_it():
    choice = choose_jobs(runs(*["dscmr"] * 32), 0, "cuda", cpus=32, memory=256 * GB, gpu_memory=1 * GB)
    # on the device a run holds its tensors, not the interpreter: 439 - 250 MB
    assert choice.gpu_jobs == int(0.8 * GB // ((439 - 250) * MB)) == 4 and choice.jobs == 4
    assert "GPU memory for 4" in choice.describe()
    assert capacity.gpu_free_memory("cpu") is None


def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24000000 kB\nMemFree: 100 kB\nMemAvailable: 20000000 kB\n")
    nothing = tmp_path / "no-cgroup"
    assert available_memory(meminfo, nothing) == 20000000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{4 * GB}\n")
    (v2 / "memory.current").write_text(f"{1 * GB}\n")
    assert available_memory(meminfo, v2) == 3 * GB  # the container's room, not the host's
    (v2 / "memory.max").write_text("max\n")
    assert available_memory(meminfo, v2) == 20000000 * 1024
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 * GB}")
    (v1 / "memory.usage_in_bytes").write_text(f"{GB // 2}")
    assert available_memory(meminfo, v1.parent) == GB + GB // 2
    (v1 / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1's "no limit"
    assert available_memory(meminfo, v1.parent) == 20000000 * 1024
    assert available_memory(tmp_path / "missing", nothing) is None


def test_longest_runs_start_first():
    order = [s.method for s in longest_first(runs("cca", "acmr", "dscmr", "mine", "djsrh", "cfa"))]
    assert order == ["mine", "dscmr", "djsrh", "acmr", "cca", "cfa"]  # unmeasured first; ties keep grid order


def test_parse_jobs_and_the_environment_default(monkeypatch):
    assert parse_jobs("auto") is None and parse_jobs(" AUTO ") is None and parse_jobs("3") == 3
    for bad in ("0", "-1", "x", "1.5", "100000"):
        with pytest.raises(CmrBenchError):
            parse_jobs(bad)
    monkeypatch.delenv("CMR_BENCH_JOBS", raising=False)
    assert jobs_default() == "auto"
    monkeypatch.setenv("CMR_BENCH_JOBS", "1")
    assert jobs_default() == "1"


def test_bad_jobs_is_one_line_exit_2(run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--jobs", "0", "--results-dir", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--jobs" in err
    monkeypatch.setenv("CMR_BENCH_JOBS", "many")
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", tmp_path)
    assert code == 2 and "CMR_BENCH_JOBS" in err and len(err.strip().splitlines()) == 1


def test_dry_run_says_what_auto_chose(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CMR_BENCH_JOBS")
    monkeypatch.setattr("cmr_bench.runner.environment.usable_cpus", lambda *a, **k: 3)
    code, out, err = run_cli("run", "--methods", "cca,random", "--dataset", "synthetic", "--seeds", "0-3",
                             "--dry-run", "--results-dir", tmp_path / "runs")
    assert code == 0, err
    assert "in 3 local processes" in out and "(--jobs auto: 3 (3 core(s), memory for" in out


GRID = ["--methods", "cca,dscmr,label-softmax", "--dataset", "synthetic", "--seeds", "0-1",
        "--set", "dscmr.epochs=3", "--set", "label-softmax.epochs=3", "--no-progress"]


def _cli(*args, env_jobs=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("CMR_BENCH_JOBS", None)
    if env_jobs is not None:
        env["CMR_BENCH_JOBS"] = env_jobs
    return subprocess.run([sys.executable, "-m", "cmr_bench.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def _stored(results):
    import json

    out = {}
    for run_file in sorted(results.rglob("run.json")):
        run = json.loads(run_file.read_text())
        with np.load(run_file.parent / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        key = (run["spec"]["method"], run["spec"]["seed"])
        out[key] = (run_file.parent.relative_to(results), (run_file.parent / "metrics.json").read_text(), arrays,
                    run["runner"]["executor"])
    return out


def test_the_default_is_auto_longest_first_and_bit_identical_to_jobs_1(tmp_path):
    from cmr_bench.runner.environment import usable_cpus

    one, auto = tmp_path / "one", tmp_path / "auto"
    p1 = _cli("run", *GRID, "--jobs", "1", "--results-dir", one)
    assert p1.returncode == 0, p1.stdout + p1.stderr
    p2 = _cli("run", *GRID, "--results-dir", auto)  # no --jobs, no $CMR_BENCH_JOBS
    assert p2.returncode == 0, p2.stdout + p2.stderr
    workers = min(usable_cpus(), 6)
    assert f"{workers} at a time (--jobs auto: {workers} (" in p2.stdout
    finished = [line.split("] ", 1)[1].split()[0:2] for line in p1.stdout.splitlines() if line.startswith("[")]
    assert [m for _, m in finished][:2] == ["dscmr", "dscmr"]  # the longest runs (by estimate.py) start first
    a, b = _stored(one), _stored(auto)
    assert set(a) == set(b) and len(a) == 6
    for key in a:
        folder, metrics, arrays, executor = a[key]
        assert (folder, metrics) == b[key][:2], key  # same run folder (identity) and the very same metrics
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], b[key][2][name], err_msg=f"{key} {name}")
        assert executor == "inline" and b[key][3] == ("process" if workers > 1 else "inline")


def test_a_run_in_this_process_limits_blas_like_a_worker():
    """--jobs 1 runs here, --jobs N in workers whose BLAS the environment limits: both must use
    the run's thread count in numpy's and scipy's BLAS too, or a closed-form method's numbers
    depend on --jobs (CCA-3V on wiki: Txt2Img 0.22459 here against 0.22431 in a worker)."""
    import scipy.linalg  # noqa: F401  (scipy's BLAS loaded, as a method's fit loads it)
    import torch
    from threadpoolctl import threadpool_info

    from cmr_bench.runner.threads import run_threads

    with run_threads(1):
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(lib["num_threads"] == 1 for lib in blas), blas
        assert torch.get_num_threads() == 1


def test_cca_3v_on_wiki_is_the_same_at_jobs_1_and_2(run_cli, real_root, tmp_path):
    import json

    got = {}
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        code, _, err = run_cli("--data-root", real_root, "run", "--methods", "cca-3v", "--dataset", "wiki", "--seeds", "0",
                               "--jobs", jobs, "--results-dir", out, "--no-progress")
        assert code == 0, err
        (metrics,) = out.rglob("metrics.json")
        got[jobs] = json.loads(metrics.read_text())
    assert got["1"]["i2t"] == got["2"]["i2t"] and got["1"]["t2i"] == got["2"]["t2i"]
