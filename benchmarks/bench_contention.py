"""A busy machine should slow a run in proportion, not stall it: the grid's slowest method on
wiki, alone and beside CPU-bound competing processes, for one torch thread (the default) and
for one thread per core (torch's own default before `--threads`). Reports the slowdown ratio
(with / without competitors) of each, measured in one session. Target (issue 15): <= 2.5x on
2 cores with one competitor.

    pytest benchmarks/bench_contention.py --benchmark-enable -p no:cacheprovider -s
    CMR_BENCH_CONTENTION_EPOCHS=40 CMR_BENCH_CONTENTION_COMPETITORS=1 ...   # the defaults

The method is the one with the largest figure in cmr_bench/runner/estimate.py among
`--methods all` (DSCMR today), shortened to a few epochs with `--set` so that the benchmark
takes minutes; the slowdown ratio does not depend on the schedule's length. Needs the real wiki
files (CMR_BENCH_DATA). Run it on an otherwise idle machine: other load changes both sides.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmr_bench.registry import all_methods
from cmr_bench.runner.estimate import WIKI_SECONDS

DATA = os.environ.get("CMR_BENCH_DATA")
EPOCHS = int(os.environ.get("CMR_BENCH_CONTENTION_EPOCHS", "40"))
COMPETITORS = int(os.environ.get("CMR_BENCH_CONTENTION_COMPETITORS", "1"))
SLOWEST = max((m for m, c in all_methods().items() if c.in_all and m in WIKI_SECONDS), key=WIKI_SECONDS.get)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _timed_run(results: Path, threads: int) -> float:
    cmd = [sys.executable, "-m", "cmr_bench.cli", "run", "--methods", SLOWEST, "--dataset", "wiki", "--seeds", "0",
           "--bits", "64", "--results-dir", str(results), "--force", "--no-progress", "--threads", str(threads)]
    if "epochs" in all_methods()[SLOWEST].defaults:
        cmd += ["--set", f"epochs={EPOCHS}"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return time.perf_counter() - start


def _competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.skipif(not DATA or not (Path(DATA) / "wiki" / "raw_features.mat").is_file(), reason="needs CMR_BENCH_DATA with wiki/")
@pytest.mark.parametrize("threads", [1, CORES], ids=["one-thread", "thread-per-core"])
def test_slowdown_with_competing_process(benchmark, report, tmp_path, threads):
    def measure():
        alone = _timed_run(tmp_path / "alone", threads)
        procs = _competitors(COMPETITORS)
        try:
            time.sleep(0.5)  # let the competitors reach full speed
            busy = _timed_run(tmp_path / "busy", threads)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        return alone, busy

    alone, busy = benchmark.pedantic(measure, rounds=1, iterations=1)
    report({"benchmark": f"contention: {SLOWEST} {EPOCHS} epochs, --threads {threads}, {COMPETITORS} competitor(s) on {CORES} cores",
            "alone_s": round(alone, 1), "busy_s": round(busy, 1), "slowdown": round(busy / alone, 2)})
