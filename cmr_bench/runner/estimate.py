"""Expected run times for `run --dry-run`, from one place: the wiki grid benchmark
(benchmarks/bench_wiki_grid.py, also tabulated in docs/methods.md). Re-measure and edit
WIKI_SECONDS when a method gets faster or slower."""

from __future__ import annotations

# Wall seconds of one run on wiki (2,173 training pairs; binary methods at 64 bits), idle
# 2-core CPU, torch on one thread, including the process start (~1.5 s) and evaluation.
WIKI_SECONDS = {
    "cca": 1.5, "random": 1.5, "label-oracle": 1.5,
    "acmr": 25, "beta-vae": 24, "sdgzsl": 30, "p3s": 36, "sdcmr": 37, "dscmr": 293,
    "djsrh": 20, "sdeh": 15, "ssah": 18,
    # Deep Table II rows: 8-12 s of CPU per default fit with evaluation (docs/methods.md; their
    # wall times there were taken at load 17-20, a ceiling), plus the process start.
    "caal": 13, "cm-gan": 13, "cmdn": 13, "corr-ae": 13, "deep-sm": 13, "mcsm": 13, "tanss": 13,
    # Measured in the main job on the shared machine (load 3-20; a ceiling), plus the process start.
    "cca-3v": 1.5, "cfa": 1.5, "jfssl": 1.5, "jrl": 1.5, "lcfs": 1.5, "lgcfl": 1.5, "scm": 1.5,
    "kcca": 8.5, "label-softmax": 3,
}
WIKI_TRAIN = 2173


def run_seconds(method: str, n_train: int | None = None) -> float | None:
    """Seconds one run of `method` is expected to take, scaled linearly by the number of
    training items (a rough guide away from wiki); None when the method was never measured."""
    base = WIKI_SECONDS.get(method)
    if base is None:
        return None
    if n_train and n_train > 0:
        return base * max(1.0, n_train / WIKI_TRAIN) if n_train > WIKI_TRAIN else base
    return base


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
