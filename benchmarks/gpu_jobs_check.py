"""Several runs sharing one GPU (`--device cuda`, `--jobs auto`) against the same grid with
`--jobs 1`: the jobs auto chose, both wall times, and how far the stored metrics differ (CUDA
kernels may reduce in another order, so the check allows 1e-4 where the CPU is bit-identical).
Run on a machine where CUDA is visible, from the repository root (gpu_evaluator_check.sh calls it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["run", "--methods", "dscmr,acmr,sdcmr,label-softmax", "--dataset", "synthetic", "--seeds", "0-3",
        "--set", "dscmr.epochs=40", "--set", "acmr.epochs=40", "--set", "sdcmr.iterations=300",
        "--device", os.environ.get("CMR_BENCH_CHECK_DEVICE", "cuda"), "--no-progress"]  # cpu: try the script here


def grid(store: Path, jobs: str | None):
    env = dict(os.environ)
    env.pop("CMR_BENCH_JOBS", None)
    cmd = [sys.executable, "-m", "cmr_bench.cli", *GRID, "--results-dir", str(store)] + (["--jobs", jobs] if jobs else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    metrics = {}
    for f in store.rglob("metrics.json"):
        metrics[str(f.parent.relative_to(store))] = json.loads(f.read_text())
    return time.perf_counter() - t0, proc.stdout.splitlines()[0], metrics


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t1, _, m1 = grid(Path(tmp) / "one", "1")
        ta, head, ma = grid(Path(tmp) / "auto", None)
    assert set(m1) == set(ma), "the two grids stored different runs"
    worst = 0.0
    def numbers(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from numbers(v, prefix + k + ".")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield prefix + k, v

    for run, metrics in m1.items():
        theirs = dict(numbers(ma[run]))
        for k, v in numbers(metrics):
            worst = max(worst, abs(v - theirs[k]))
    print(head)
    print(f"--jobs 1: {t1:.1f} s; --jobs auto: {ta:.1f} s (ratio {ta / t1:.2f}); largest metric difference {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
