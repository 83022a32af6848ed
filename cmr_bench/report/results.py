"""Collect stored runs of one dataset into a tidy frame: one row per finished or failed run."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cmr_bench.errors import CmrBenchError

from cmr_bench.runner.store import STATUS_DONE, iter_runs

DEFAULT_REFERENCE = Path("results") / "reference"  # the committed archive of reference runs (runner/archive.py)


def method_key(method: str, variant: str) -> str:
    return f"{method}[{variant}]" if variant else method


TUNED_SUFFIX = " (tuned)"


def source_text(spec: dict) -> str:
    """' (tuned)' for a run made with --config tuned: an entry of its own beside the default."""
    return TUNED_SUFFIX if spec.get("config_source", "default") == "tuned" else ""


def overrides_text(overrides) -> str:
    """' {key=value, ...}' for a run made with --set (a row of its own in tables), '' otherwise."""
    if not overrides or not isinstance(overrides, dict):
        return ""
    import json

    return " {" + ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(overrides.items())) + "}"


def stored_runs(runs_dir: Path, dataset: str, data: str | None = None, reference: Path | None = None,
                root: Path | None = None):
    """(folder, run.json, metrics.json) of the user's runs, plus, with `reference` (an archive
    folder, see runner/archive.py), the archived runs of every entry (method configuration and
    code length) the user has no finished run of. Returns (runs, archive or None)."""
    runs = list(iter_runs(Path(runs_dir), dataset, data=data))
    if reference is None:
        return runs, None
    from cmr_bench.runner.archive import combine

    def here():
        from cmr_bench.data.loader import load_dataset

        try:
            return load_dataset(dataset, root).fingerprint
        except (CmrBenchError, OSError, ValueError):  # no data here: the user's runs are all there is to check against
            return None

    return combine(runs, Path(reference), dataset, here)


def reference_note(runs: pd.DataFrame, shown) -> list[str]:
    """Which of a table's rows (keys in `shown`) came from the reference archive (none: no note)."""
    if runs.empty or "source" not in runs:
        return []
    ref = runs[(runs["source"] == "reference") & runs["key"].isin(list(shown))]
    if ref.empty:
        return []
    keys = ", ".join(sorted(set(ref["key"] + ref["bits"].map(lambda b: f" ({int(b)} bits)" if pd.notna(b) else ""))))
    return [(f"From the reference archive {ref['archive'].iloc[0]}, not rerun here: {keys}. "
             "Rows with runs in this results dir use those instead (--no-reference: these runs alone).")]


DIRTY = " (uncommitted changes)"
UNKNOWN_CODE = "unknown"


def describe_commit(git) -> str | None:
    """A run's recorded git state as shown everywhere: the commit's 12 hex digits, with DIRTY when
    its tree had uncommitted changes; None when no commit was recorded."""
    commit = git.get("commit") if isinstance(git, dict) else None
    if not commit:
        return None
    return str(commit)[:12] + (DIRTY if git.get("dirty") else "")


def code_version(run: dict) -> str:
    return describe_commit((run.get("environment") or {}).get("git")) or UNKNOWN_CODE


def provenance_note(runs: pd.DataFrame, shown) -> list[str]:
    """Which code made the finished runs behind a table's rows (keys in `shown`): one commit and a
    clean tree is what a paper can cite; anything else is named, with its run counts."""
    if runs.empty or "commit" not in runs:
        return []
    mine = runs[runs["key"].isin(list(shown)) & (runs["status"] == STATUS_DONE)]
    if mine.empty:
        return []
    counts = mine["commit"].value_counts()
    if len(counts) == 1 and not counts.index[0].endswith(DIRTY) and counts.index[0] != UNKNOWN_CODE:
        return [f"Code: all {len(mine)} runs behind this table were made at git commit {counts.index[0]}, "
                "with no uncommitted changes."]
    versions = "; ".join(f"{c} ({n} runs)" for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return [f"Code: the {len(mine)} runs behind this table were made at {len(counts)} code versions, not one "
            f"clean commit: {versions}."]


def collect(runs_dir: Path, dataset: str, protocol: str | None = None, include_overrides: bool = False,
            data: str | None = None, reference: Path | None = None, root: Path | None = None) -> pd.DataFrame:
    """Runs made with --set overrides are left out of paper tables unless asked for: a table
    row must mean the method's published configuration. Runs of different data (another
    dataset of the same name, or changed files: see Dataset.fingerprint) are never mixed:
    `data` picks one fingerprint, and without it more than one is an error. `reference`: also
    the archived reference runs of entries without a finished run here (see stored_runs)."""
    from cmr_bench.runner.archive import is_reference

    rows = []
    found, archive = stored_runs(runs_dir, dataset, data=data, reference=reference, root=root)
    for folder, run, metrics in found:
        spec = run.get("spec", {})
        if protocol and spec.get("protocol") != protocol:
            continue
        if spec.get("overrides") and not include_overrides:
            continue
        row = {
            "key": method_key(spec["method"], spec.get("variant", "")) + source_text(spec) + overrides_text(spec.get("overrides")),
            "method": spec["method"],
            "variant": spec.get("variant", ""), "bits": spec.get("bits"), "seed": spec["seed"],
            "config_hash": spec.get("config_hash"), "status": run.get("status"), "reason": run.get("reason", ""),
            "finished": str(run.get("finished", "")), "folder": str(folder), "code_type": run.get("method_info", {}).get("code_type"),
            "data": str(spec.get("data") or ""),
            "source": "reference" if is_reference(folder, archive) else "store",
            "archive": archive.describe() if is_reference(folder, archive) else "",
            "commit": code_version(run),
        }
        if data is not None and row["data"] != data:
            continue
        if run.get("status") == STATUS_DONE and metrics:
            for d in ("i2t", "t2i"):
                for k, v in metrics[d].items():
                    if k.startswith("map@") or k.startswith("p@"):
                        # the store validated these; a table checks again rather than print nonsense
                        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                            raise CmrBenchError(f"run {folder}: {d} {k} = {v!r} is not a number in [0, 1]")
                        row[f"{d}:{k}"] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    prints = df["data"].value_counts()
    if len(prints) > 1:
        shown = ", ".join(f"{fp or 'none recorded'} ({n} runs)" for fp, n in prints.items())
        raise CmrBenchError(f"runs of dataset '{dataset}' in {runs_dir} come from {len(prints)} different data "
                            f"(fingerprints {shown}); a table never mixes them: keep one in this results dir "
                            "and move the others to another --results-dir")
    # One configuration per (key, bits): the most recently finished one (older defaults stay on disk).
    latest = df.sort_values("finished").groupby(["key", df["bits"].fillna(0)])["config_hash"].last()
    keep = df.apply(lambda r: latest.get((r["key"], r["bits"] if pd.notna(r["bits"]) else 0)) == r["config_hash"], axis=1)
    return df[keep].reset_index(drop=True)
