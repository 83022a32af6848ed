"""Aggregate stored runs: mean ± std over seeds per (method, variant, bits)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from cmr_bench.runner.store import STATUS_DONE, STATUS_FAILED, validate_run


def load_runs(runs_dir: Path, specs) -> list[tuple[object, dict, dict | None]]:
    """(spec, run.json, metrics.json or None) for each spec whose run folder validates."""
    out = []
    for spec in specs:
        state = validate_run(spec.folder(runs_dir))
        if state.status in (STATUS_DONE, STATUS_FAILED):
            out.append((spec, state.run, state.metrics))
    return out


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite values; NaNs when none."""
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(a) == 0:
        return np.nan, np.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def summary_rows(runs_dir: Path, specs, metric: str = "map@all") -> list[dict]:
    groups: dict[tuple, dict] = defaultdict(lambda: {"i2t": [], "t2i": [], "failed": 0})
    for spec, run, metrics in load_runs(runs_dir, specs):
        g = groups[(spec.protocol, spec.method, spec.variant, spec.bits)]
        if metrics is None:
            g["failed"] += 1
            continue
        g["i2t"].append(metrics["i2t"][metric])
        g["t2i"].append(metrics["t2i"][metric])
    rows = []
    # protocols apart (real and hash numbers are not comparable), code lengths in numeric order
    for (protocol, method, variant, bits), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] or 0)):
        row = {"protocol": protocol, "method": method + (f" [{variant}]" if variant else ""), "bits": bits or "", "runs": len(g["i2t"])}
        for d in ("i2t", "t2i"):
            if g[d]:
                m, s, n = mean_std(g[d])
                row[f"{d} {metric}"] = f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"
        if g["i2t"]:
            row["avg"] = f"{(np.mean(g['i2t']) + np.mean(g['t2i'])) / 2:.4f}"
        if g["failed"]:
            row["failed"] = g["failed"]
        rows.append(row)
    return rows
