"""The results store: one folder per run, written to a temporary folder and renamed into
place when complete, so a crash never leaves a half-written run under its final name.

<runs>/<dataset>/<protocol>/<method>/<variant>[-<bits>bits]-<config hash>/seed-<k>/
    run.json      spec, resolved config, environment, split, timings, status (+ reason)
    metrics.json  Img2Txt and Txt2Img: map@all, map@50, p@R, PR curves
    log.jsonl     the training log, one JSON object per line
    arrays.npz    codes of the query and retrieval splits, per-query APs, split indices
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

STATUS_DONE, STATUS_FAILED = "done", "failed"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_run(folder: Path, run: dict[str, Any], metrics: dict | None, log: list[dict], arrays: dict[str, np.ndarray]) -> None:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        (tmp / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True, default=_json_default))
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
        with open(tmp / "log.jsonl", "w") as fh:
            for row in log:
                fh.write(json.dumps(row, default=_json_default) + "\n")
        if arrays:
            np.savez_compressed(tmp / "arrays.npz", **arrays)
        if folder.exists():  # replacing a failed or forced run
            old = folder.parent / f".{folder.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_status(folder: Path) -> str | None:
    """'done', 'failed', 'corrupt' (unreadable run.json or missing metrics), or None (absent)."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return "corrupt"
    if status == STATUS_DONE and not (Path(folder) / "metrics.json").is_file():
        return "corrupt"
    return status


def iter_runs(runs_dir: Path, dataset: str | None = None):
    """Yield (folder, run.json, metrics.json or None) for every stored run, skipping temp folders."""
    runs_dir = Path(runs_dir)
    base = runs_dir / dataset if dataset else runs_dir
    if not base.is_dir():
        return
    for run_file in sorted(base.rglob("run.json")):
        folder = run_file.parent
        if any(part.startswith(".") for part in folder.relative_to(runs_dir).parts):
            continue
        try:
            run = json.loads(run_file.read_text())
            metrics_file = folder / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        except (OSError, ValueError):
            continue
        yield folder, run, metrics
