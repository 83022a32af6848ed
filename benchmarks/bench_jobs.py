"""`--jobs auto` (the default) against `--jobs 1` on one small grid of deep runs on synthetic data
(no data files needed), timed as whole commands in one pytest run; the ratio is what to read
(this machine is shared): on an idle 2-core CPU it should approach 1 / min(2, cores).

    pytest benchmarks/bench_jobs.py --benchmark-enable -p no:cacheprovider -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

GRID = ["run", "--methods", "dscmr,acmr,sdcmr,label-softmax", "--dataset", "synthetic", "--seeds", "0-1",
        "--set", "dscmr.epochs=40", "--set", "acmr.epochs=40", "--set", "sdcmr.iterations=200", "--no-progress"]


def _timed(tmp_path, name, jobs):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("CMR_BENCH_JOBS", None)
    cmd = [sys.executable, "-m", "cmr_bench.cli", *GRID, "--results-dir", str(tmp_path / name)]
    if jobs:
        cmd += ["--jobs", jobs]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return time.perf_counter() - t0


def test_jobs_auto_against_jobs_1(benchmark, report, tmp_path):
    from cmr_bench.runner.environment import usable_cpus

    one = _timed(tmp_path, "one", "1")
    auto = benchmark.pedantic(lambda: _timed(tmp_path, f"auto-{time.monotonic_ns()}", None), rounds=1, iterations=1)
    report({"benchmark": "grid of 8 short deep runs: --jobs auto / --jobs 1", "cores": usable_cpus(),
            "jobs1_s": round(one, 1), "auto_s": round(auto, 1), "ratio": round(auto / one, 3)})
