"""Expected run times for `run --dry-run` (and `reproduce --dry-run`), from one place: the
README's main job timed on an idle 2-core CPU. Re-measure and edit WIKI_SECONDS when a method
gets faster or slower (benchmarks/bench_wiki_grid.py times one method at a time)."""

from __future__ import annotations

# Wall seconds of one run on wiki (2,173 training pairs; binary methods at 64 bits) with
# evaluation, idle 2-core CPU, torch on one thread, runs in the grid's process: measured in the
# README's main job on 2026-11-30 (26 min 05 s for its 36 runs), rounded up; "label-oracle" is a
# test-only stub. A run in a `--jobs` worker adds ~2 s of process start-up per worker.
WIKI_SECONDS = {
    "cca": 0.5, "random": 0.5, "label-oracle": 0.5,
    "acmr": 43, "beta-vae": 41, "sdgzsl": 47, "p3s": 50, "sdcmr": 51, "dscmr": 612,
    "djsrh": 111, "sdeh": 27, "ssah": 31,
    # caal: its 60-epoch, 1024-unit default with the refit on the whole training split: 41.7 s in
    # the main job of 2026-12-06 (benchmarks/results/main_job-2026-12-06-jobsauto.json)
    "caal": 45, "cm-gan": 12, "cmdn": 8, "corr-ae": 6, "deep-sm": 5, "mcsm": 8, "tanss": 8,
    "cca-3v": 0.5, "cfa": 0.5, "jfssl": 0.5, "jrl": 0.5, "lcfs": 0.5, "lgcfl": 0.5, "scm": 0.5,
    "kcca": 4, "label-softmax": 1.5,
}
WIKI_TRAIN = 2173

# Peak resident memory (MB) of one run on wiki in a fresh process, torch on one thread
# (benchmarks/bench_wiki_grid.py, docs/methods.md; ~250 MB of each is the interpreter with torch,
# numpy and scipy imported). `--jobs auto` divides the available memory by these.
WIKI_PEAK_MB = {
    "cca": 270, "random": 263, "label-oracle": 270,
    "acmr": 349, "beta-vae": 478, "sdgzsl": 518, "p3s": 575, "sdcmr": 577, "dscmr": 439,
    "djsrh": 423, "sdeh": 482, "ssah": 512,
    "caal": 428, "cm-gan": 410, "cmdn": 429, "corr-ae": 399, "deep-sm": 406, "mcsm": 415, "tanss": 409,
    "cca-3v": 314, "cfa": 312, "jfssl": 386, "jrl": 382, "lcfs": 312, "lgcfl": 312, "scm": 314,
    "kcca": 544, "label-softmax": 392,
}
# A method never measured is assumed to need the largest figure above.
UNKNOWN_PEAK_MB = max(WIKI_PEAK_MB.values())
# Beyond the wiki figure a run holds the dataset's arrays a few times over (loaded, as float32
# tensors, standardised, encoded): 4 copies bounds every NUS-WIDE-size peak in docs/scaling.md
# (1.7-5.3 GB measured against 1.26 GB of features x 4 + 0.6 GB).
DATA_COPIES = 4


def run_seconds(method: str, n_train: int | None = None) -> float | None:
    """Seconds one run of `method` is expected to take, scaled linearly by the number of
    training items (a rough guide away from wiki); None when the method was never measured."""
    base = WIKI_SECONDS.get(method)
    if base is None:
        return None
    if n_train and n_train > 0:
        return base * max(1.0, n_train / WIKI_TRAIN) if n_train > WIKI_TRAIN else base
    return base


def train_items(dataset, specs) -> int | None:
    """The largest training split the runs' protocols train on (None when it cannot be told)."""
    try:
        protos = {spec.protocol for spec in specs}
        return max(len(dataset.split(dataset.protocol(p).train)) for p in protos) if protos else None
    except Exception:  # an estimate must never stop a grid
        return None


def run_peak_bytes(method: str, data_bytes: int = 0) -> int:
    """Expected peak resident memory of one run of `method` (bytes): its wiki figure plus
    DATA_COPIES x the dataset's feature bytes (a rough, deliberately high guide)."""
    return int(WIKI_PEAK_MB.get(method, UNKNOWN_PEAK_MB) * 2**20 + DATA_COPIES * max(0, int(data_bytes)))


def longest_first(specs, n_train: int | None = None) -> list:
    """The runs ordered by expected seconds, longest first (stable; methods without a figure
    first, since they may be long): with several workers the grid then ends on short runs
    instead of waiting for one long DSCMR run started last."""
    def key(spec):
        t = run_seconds(spec.method, n_train)
        return -(float("inf") if t is None else t)

    return sorted(specs, key=key)


def grid_estimate(specs, n_train: int | None = None, workers: int = 1) -> tuple[float, list[str]]:
    """(expected wall seconds of the pending runs, methods without a figure). Runs are packed
    greedily onto `workers` processes, longest first."""
    times, unknown = [], []
    for spec in specs:
        t = run_seconds(spec.method, n_train)
        if t is None:
            unknown.append(spec.method)
        else:
            times.append(t)
    loads = [0.0] * max(1, workers)
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads), sorted(set(unknown))
