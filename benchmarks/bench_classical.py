"""All classical methods together fit on wiki (2,173 training pairs) and encode its 693 test
pairs: target < 2 minutes on the 2-core CPU (one thread each, as the runner runs them).
Needs the real wiki files (CMR_BENCH_DATA). Also the scaling figures of KCCA and JRL on a
synthetic NUS-WIDE-10k-shaped set (4096/300-d), smaller n, peak RSS measured per child process.

    pytest benchmarks/bench_classical.py --benchmark-enable -p no:cacheprovider -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = os.environ.get("CMR_BENCH_DATA")
CLASSICAL = ["cca", "cfa", "kcca", "kcca[poly]", "jrl", "lgcfl", "jfssl", "lcfs", "cca-3v", "scm", "scm[SM]"]
BUDGET_S = 120.0


def _fit_all_on_wiki():
    import cmr_bench
    from cmr_bench.registry import all_methods

    ds = cmr_bench.load_dataset("wiki")
    train, test = ds.splits["train"], ds.splits["test"]
    times = {}
    for key in CLASSICAL:
        name, _, variant = key.partition("[")
        cls = all_methods()[name]
        config = cls.variants[variant.rstrip("]")] if variant else {}
        start = time.perf_counter()
        m = cls(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes, config=cls.resolve_config(config), seed=0)
        m.fit(train)
        m.encode(test.image, "image")
        m.encode(test.text, "text")
        times[key] = time.perf_counter() - start
    return times


@pytest.mark.skipif(not DATA or not (Path(DATA) / "wiki" / "raw_features.mat").is_file(), reason="needs CMR_BENCH_DATA with wiki/")
def test_all_classical_methods_fit_on_wiki(benchmark, report):
    import torch

    torch.set_num_threads(1)
    times = benchmark.pedantic(_fit_all_on_wiki, rounds=1, iterations=1)
    total = sum(times.values())
    benchmark.extra_info.update({f"{k}_s": round(v, 2) for k, v in times.items()}, total_s=round(total, 1),
                                budget_s=BUDGET_S)
    report({"benchmark": "classical methods, wiki fit+encode", "total_s": round(total, 1), "budget_s": BUDGET_S,
            **{k: round(v, 1) for k, v in times.items()}})


_SCALE_CHILD = """
import resource, sys, time
import numpy as np
from cmr_bench.data.types import Split
from cmr_bench.registry import all_methods
name, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
labels = rng.integers(0, 10, n)
protos = rng.normal(size=(10, 32))
z = protos[labels] + rng.normal(size=(n, 32))
img = np.maximum(z @ rng.normal(size=(32, 4096)) / 6 + rng.normal(size=(n, 4096)) * 0.5, 0)
txt = z @ rng.normal(size=(32, 300)) / 6 + rng.normal(size=(n, 300)) * 0.5
train = Split("train", img, txt, labels, np.arange(n))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cls = all_methods()[name]
m = cls(image_dim=4096, text_dim=300, num_classes=10, config=cls.resolve_config({}), seed=0)
t = time.perf_counter(); m.fit(train); fit_s = time.perf_counter() - t
print("RESULT", fit_s, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


@pytest.mark.parametrize("method", ["kcca", "jrl"])
@pytest.mark.parametrize("n", [2000, 6000, 12000])
def test_scaling_on_nuswide_shaped_data(benchmark, report, method, n):
    """Fit time and peak RSS on synthetic 4096/300-d data; extrapolated to 42,941 in docs/methods.md."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run():
        proc = subprocess.run([sys.executable, "-c", _SCALE_CHILD, method, str(n)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        fit_s, base_kb, peak_kb = proc.stdout.rsplit("RESULT", 1)[1].split()
        return float(fit_s), int(base_kb), int(peak_kb)

    fit_s, base_kb, peak_kb = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(fit_s=round(fit_s, 1), data_rss_mb=round(base_kb / 1024), peak_rss_mb=round(peak_kb / 1024))
    report({"benchmark": f"{method} n={n} 4096/300-d", "fit_s": round(fit_s, 1),
            "rss_after_data_mb": round(base_kb / 1024), "peak_rss_mb": round(peak_kb / 1024)})
