"""The wiki grid, one method at a time: wall time and peak memory of
`cmr-bench run --methods M --dataset wiki --seeds 0` (each in a fresh subprocess, so the peak
RSS is the method's own). Needs the real wiki files (CMR_BENCH_DATA).

    pytest benchmarks/bench_wiki_grid.py -p no:cacheprovider -s
    CMR_BENCH_GRID_METHODS=corr-ae,cmdn pytest benchmarks/bench_wiki_grid.py ...   # only these

Every method in `--methods all` is covered, read from the registry. Slow (minutes: DSCMR's 500
epochs dominate); the numbers are recorded in docs/methods.md. Besides wall time the child's CPU
time is recorded: on a shared machine the wall time grows with the load, the CPU time barely.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmr_bench.registry import all_methods

DATA = os.environ.get("CMR_BENCH_DATA")
METHODS = [n for n, c in all_methods().items() if c.in_all]
_ONLY = [m for m in os.environ.get("CMR_BENCH_GRID_METHODS", "").split(",") if m]
if _ONLY:  # an unknown name is an error, not an empty run
    _unknown = sorted(set(_ONLY) - set(METHODS))
    if _unknown:
        raise ValueError(f"CMR_BENCH_GRID_METHODS: not in --methods all: {', '.join(_unknown)}")
    METHODS = [m for m in METHODS if m in _ONLY]

_CHILD = """
import resource, sys
from cmr_bench.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print("PEAK_RSS_KB", usage.ru_maxrss, "CPU_S", usage.ru_utime + usage.ru_stime, flush=True)
sys.exit(code)
"""


@pytest.mark.skipif(not DATA or not (Path(DATA) / "wiki" / "raw_features.mat").is_file(), reason="needs CMR_BENCH_DATA with wiki/")
@pytest.mark.parametrize("method", METHODS)
def test_wiki_grid_one_method(report, tmp_path, method):
    def run():
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, "run", "--methods", method, "--dataset", "wiki", "--seeds", "0",
             "--bits", "64", "--results-dir", str(tmp_path), "--force", "--no-progress"],
            capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        tail = proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()
        return time.perf_counter() - start, int(tail[0]), float(tail[2])

    # timed here, not through pytest-benchmark's fixture: one round of a minutes-long run
    wall, peak_kb, cpu = run()
    fits = [json.loads(p.read_text())["timings"].get("fit_s", 0.0) for p in tmp_path.rglob("run.json")]
    report({"benchmark": f"wiki grid: {method}", "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "fit_s": round(sum(fits), 1),
            "peak_rss_mb": round(peak_kb / 1024, 1)})
