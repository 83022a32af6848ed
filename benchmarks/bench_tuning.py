"""Issue 14: the time of a `cmr-bench tune` study per method on wiki (train-only load, one torch
thread, the same trial budget for every method). Target: a 40-trial SDCMR study within 30
minutes on the 2-core CPU. Needs the real wiki files (CMR_BENCH_DATA); opt-in:

    pytest benchmarks/bench_tuning.py --benchmark-enable -p no:cacheprovider -s
    CMR_BENCH_TUNE_TRIALS=40 CMR_BENCH_TUNE_METHODS=sdcmr pytest benchmarks/bench_tuning.py ...

$CMR_BENCH_TUNE_TRIALS sets the budget (default 3: a per-trial figure, not a full study);
$CMR_BENCH_TUNE_METHODS a comma list (default every method in `--methods all`). Each study
starts from an empty storage, so pruning begins after the same five startup trials as `tune`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

DATA = os.environ.get("CMR_BENCH_DATA")
TRIALS = int(os.environ.get("CMR_BENCH_TUNE_TRIALS", "3"))
BITS = 64  # binary methods are tuned at one code length
TARGET_40_TRIALS_S = {"sdcmr": 30 * 60.0}


def _methods() -> list[str]:
    from cmr_bench.registry import all_methods

    wanted = os.environ.get("CMR_BENCH_TUNE_METHODS")
    if wanted:
        return [m.strip() for m in wanted.split(",") if m.strip()]
    return sorted(n for n, c in all_methods().items() if c.in_all)


needs_wiki = pytest.mark.skipif(not DATA or not (Path(DATA) / "wiki" / "raw_features.mat").is_file(),
                                reason="needs CMR_BENCH_DATA with wiki/")


@needs_wiki
@pytest.mark.parametrize("name", _methods())
def test_study_time_on_wiki(name, benchmark, report, tmp_path):
    pytest.importorskip("optuna")
    import torch

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.registry import get_method
    from cmr_bench.tuning import tune_method

    torch.set_num_threads(1)
    ds = load_dataset("wiki", DATA, train_only=True)
    bits = BITS if get_method(name).code_type == "binary" else None

    def study():
        start = time.perf_counter()
        res = tune_method(name, ds, TRIALS, f"sqlite:///{tmp_path / f'{name}.db'}", bits=bits)
        return res, time.perf_counter() - start

    res, seconds = benchmark.pedantic(study, rounds=1, iterations=1)
    finished = res["trials"] + res["pruned"]
    per_trial = seconds / max(1, finished)
    row = {"benchmark": f"tune {name} on wiki", "trials": finished, "pruned": res["pruned"], "sampler": res["sampler"],
           "study_s": round(seconds, 1), "per_trial_s": round(per_trial, 1), "best_val": round(res["value"], 4),
           "load_1min": round(os.getloadavg()[0], 1)}
    if name in TARGET_40_TRIALS_S:
        row["target_40_trials_s"] = TARGET_40_TRIALS_S[name]
    benchmark.extra_info.update(row)
    report(row)
    if name in TARGET_40_TRIALS_S and TRIALS >= 40:
        assert seconds <= TARGET_40_TRIALS_S[name], f"{name}: {TRIALS} trials took {seconds:.0f} s"
