"""Collect stored runs of one dataset into a tidy frame: one row per finished or failed run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmr_bench.runner.store import STATUS_DONE, iter_runs


def method_key(method: str, variant: str) -> str:
    return f"{method}[{variant}]" if variant else method


def collect(runs_dir: Path, dataset: str, protocol: str | None = None, include_overrides: bool = False) -> pd.DataFrame:
    """Runs made with --set overrides are left out of paper tables unless asked for: a table
    row must mean the method's published configuration."""
    rows = []
    for folder, run, metrics in iter_runs(Path(runs_dir), dataset):
        spec = run.get("spec", {})
        if protocol and spec.get("protocol") != protocol:
            continue
        if spec.get("overrides") and not include_overrides:
            continue
        row = {
            "key": method_key(spec["method"], spec.get("variant", "")), "method": spec["method"],
            "variant": spec.get("variant", ""), "bits": spec.get("bits"), "seed": spec["seed"],
            "config_hash": spec.get("config_hash"), "status": run.get("status"), "reason": run.get("reason", ""),
            "finished": run.get("finished", ""), "folder": str(folder), "code_type": run.get("method_info", {}).get("code_type"),
        }
        if run.get("status") == STATUS_DONE and metrics:
            for d in ("i2t", "t2i"):
                for k, v in metrics[d].items():
                    if isinstance(v, (int, float)) and (k.startswith("map@") or k.startswith("p@")):
                        row[f"{d}:{k}"] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # One configuration per (key, bits): the most recently finished one (older defaults stay on disk).
    latest = df.sort_values("finished").groupby(["key", df["bits"].fillna(0)])["config_hash"].last()
    keep = df.apply(lambda r: latest.get((r["key"], r["bits"] if pd.notna(r["bits"]) else 0)) == r["config_hash"], axis=1)
    return df[keep].reset_index(drop=True)
