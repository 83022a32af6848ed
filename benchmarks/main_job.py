"""Time the README's main job (`cmr-bench run --methods all --dataset wiki`) as a user runs it,
with the machine's load beside the figure, and write the measurement into benchmarks/results/.

    CMR_BENCH_DATA=../shared/data python benchmarks/main_job.py                # the default (--jobs auto)
    CMR_BENCH_DATA=../shared/data python benchmarks/main_job.py --jobs 1       # the old default, for the ratio

Each invocation runs the whole job into a fresh temporary store (nothing is reused), samples the
1-minute load average every 10 s, and records: wall time, the jobs chosen, each run's own time,
the sum of run times (the work), the longest run, and the bound the schedule cannot beat on this
machine: max(longest run, work / workers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DSCMR_FLOP = 26e12  # DSCMR's 500 default epochs on wiki (2048/1024-wide layers), forward + backward


def one_thread_gflops(n: int = 1024, repeat: int = 20) -> float:
    """float32 matrix-multiply rate of one torch thread: the arithmetic one run can use."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default=None, help="passed to `run` (default: not given, i.e. auto)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for main_job-<date>-jobs<N>.json")
    args = ap.parse_args(argv)
    if not os.environ.get("CMR_BENCH_DATA"):
        print("set CMR_BENCH_DATA to a data root holding wiki/", file=sys.stderr)
        return 2
    loads: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            loads.append(os.getloadavg()[0])
            stop.wait(10)

    with tempfile.TemporaryDirectory(prefix="cmr-main-job-") as tmp:
        cmd = [sys.executable, "-m", "cmr_bench.cli", "run", "--methods", "all", "--dataset", "wiki",
               "--results-dir", str(Path(tmp) / "runs"), "--no-progress"]
        if args.jobs:
            cmd += ["--jobs", str(args.jobs)]
        env = dict(os.environ)
        if not args.jobs:
            env.pop("CMR_BENCH_JOBS", None)
        load_before = os.getloadavg()[0]
        gflops = one_thread_gflops()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    runs = [(m.group(1), float(m.group(2))) for m in re.finditer(r"^\[\d+/\d+\] (\S+ .*?): done in ([\d.]+)s", proc.stdout, re.M)]
    head = proc.stdout.splitlines()[0]
    at_once = re.search(r"(\d+) at a time", head)
    workers = int(at_once.group(1)) if at_once else 1
    work = sum(t for _, t in runs)
    longest = max(runs, key=lambda r: r[1]) if runs else ("", 0.0)
    bound = max(longest[1], work / workers)
    record = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "cmr-bench run --methods all --dataset wiki" + (f" --jobs {args.jobs}" if args.jobs else ""),
        "cpus": os.cpu_count(), "first_line": head, "workers": workers, "runs": len(runs),
        "wall_s": round(wall, 1), "work_s": round(work, 1), "longest_run": [longest[0], longest[1]],
        "schedule_bound_s": round(bound, 1), "wall_over_bound": round(wall / bound, 3) if bound else None,
        "one_thread_sgemm_gflops": round(gflops, 1),
        "dscmr_run_gflops": round(DSCMR_FLOP / 1e9 / max(t for label, t in runs if "dscmr" in label), 1)
        if any("dscmr" in label for label, _ in runs) else None,
        "load_1min_before": round(load_before, 2),
        "load_1min_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load_1min_max": round(max(loads), 2) if loads else None,
        "run_seconds": {label: t for label, t in runs},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"main_job-{record['when'][:10]}-jobs{args.jobs or 'auto'}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "run_seconds"}, indent=1))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
