"""The reference-run archive: a compact, committed copy of a store's finished runs, so a new
method joins the tables beside the baselines without rerunning them.

<archive>/<dataset>/archive.json    data fingerprint, commits, run count, sha256 of every file
<archive>/<dataset>/<protocol>/<method>/<config>/seed-<k>/
    run.json      the run's run.json without host details and without the store's checksums
    metrics.json  as stored (mAP, p@k, PR curves)
    arrays.npz    per_query_ap_i2t, per_query_ap_t2i, split_query_indices only (no codes)

The layout is the store's, so significance tests read an archived run like a stored one. The
archive is read on its own path (not validate_run): every file must match archive.json's sha256
and no unlisted run may sit beside them; any mismatch is a one-line refusal.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmr_bench.data.loader import sha256_file
from cmr_bench.errors import CmrBenchError
from cmr_bench.safe_io import swap_folder

FORMAT = 1
INDEX = "archive.json"
ARRAY_KEYS = ("per_query_ap_i2t", "per_query_ap_t2i", "split_query_indices")
RUN_FILES = ("run.json", "metrics.json", "arrays.npz")
DROPPED_RUN_KEYS = ("files", "runner")  # checksums live in archive.json; host and pid say nothing
MAX_INDEX_BYTES = 16 << 20
MAX_FILE_BYTES = 64 << 20  # an archived run file is tens of kB; anything this large is not ours
NO_REFERENCE_HINT = "pass --no-reference to use your runs alone"
_WARNED: set[Path] = set()


class ReferenceError(CmrBenchError):
    """The reference archive cannot be used: edited, damaged, or made on other data."""


@dataclass
class Archive:
    folder: Path  # <archive>/<dataset>
    data: str
    commits: dict[str, int]
    clean: bool
    runs: list[tuple[Path, dict, dict]] = field(default_factory=list)  # (folder, run.json, metrics.json)

    def describe(self) -> str:
        commits = ", ".join(c[:12] for c in sorted(self.commits)) or "no commit recorded"
        return f"{self.folder} ({len(self.runs)} runs, commit {commits}{'' if self.clean else ', uncommitted changes'})"


def entry_of(spec: dict) -> tuple:
    """What a table row (or figure curve) is made of: one method configuration at one code length
    under one protocol. A user's finished run of an entry replaces the archive's runs of it."""
    overrides = json.dumps(spec.get("overrides") or {}, sort_keys=True)
    return (spec.get("protocol"), spec.get("method"), spec.get("variant", "") or "", spec.get("config_source", "default"),
            overrides, spec.get("bits"))


def _metric_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0


# --- writing ---------------------------------------------------------------------------------


def _latest_configs(runs: list[tuple[Path, dict, dict]]) -> list[tuple[Path, dict, dict]]:
    """One configuration per entry, as tables show it: the most recently finished one."""
    latest: dict[tuple, tuple[str, str]] = {}
    for _, run, _ in runs:
        spec = run["spec"]
        key = entry_of(spec)
        stamp = (str(run.get("finished", "")), str(spec.get("config_hash")))
        if key not in latest or stamp > latest[key]:
            latest[key] = stamp
    return [r for r in runs if latest[entry_of(r[1]["spec"])][1] == str(r[1]["spec"].get("config_hash"))]


def build_archive(store: Path, dataset: str, out: Path, float32: bool = False) -> tuple[Path, dict]:
    """Archive the finished runs of `dataset` in `store` (runs made with --set are left out: a
    reference row is a method's published or tuned configuration) into <out>/<dataset>/,
    replacing an archive already there. Per-query APs are kept exactly (float64) unless
    `float32`. Returns (folder, archive.json)."""
    from cmr_bench.paths import check_component
    from cmr_bench.runner.store import STATUS_DONE, iter_runs, json_default

    check_component(dataset, "dataset name")
    store, out = Path(store), Path(out)
    runs = [(f, r, m) for f, r, m in iter_runs(store, dataset) if r.get("status") == STATUS_DONE and m
            and not r["spec"].get("overrides")]
    if not runs:
        raise CmrBenchError(f"no finished runs of dataset '{dataset}' in {store}: nothing to archive")
    runs = _latest_configs(runs)
    prints = {str(r["spec"].get("data") or "") for _, r, _ in runs}
    if "" in prints:
        raise CmrBenchError(f"runs of '{dataset}' in {store} record no data fingerprint (made by an old version): "
                            "an archive must be checkable against the data; rerun them")
    target = out / dataset
    if (target.exists() or target.is_symlink()) and not (target.is_dir() and not target.is_symlink() and (target / INDEX).is_file()):
        raise CmrBenchError(f"{target} exists and is not a reference archive (no {INDEX}); move it away, nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{dataset}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        files, commits, clean = {}, {}, True
        for folder, run, metrics in runs:
            rel = folder.relative_to(store / dataset)
            dest = tmp / rel
            dest.mkdir(parents=True)
            slim = {k: v for k, v in run.items() if k not in DROPPED_RUN_KEYS}
            (dest / "run.json").write_text(json.dumps(slim, indent=1, sort_keys=True, default=json_default))
            (dest / "metrics.json").write_text(json.dumps(metrics, separators=(",", ":"), sort_keys=True, default=json_default))
            try:
                with np.load(folder / "arrays.npz") as arrays:
                    kept = {k: np.asarray(arrays[k]) for k in ARRAY_KEYS}
            except (OSError, KeyError, ValueError) as exc:
                raise CmrBenchError(f"run {folder}: arrays.npz lacks the per-query AP an archive needs ({type(exc).__name__})") from None
            if float32:  # about 40% smaller; APs then differ from the run's by < 1e-7 (relative)
                kept = {k: v.astype(np.float32) if k.startswith("per_query_ap_") else v for k, v in kept.items()}
            np.savez_compressed(dest / "arrays.npz", **kept)
            for name in RUN_FILES:
                files[(rel / name).as_posix()] = {"sha256": sha256_file(dest / name), "bytes": (dest / name).stat().st_size}
            git = (run.get("environment") or {}).get("git") or {}
            commit = str(git.get("commit") or "") if isinstance(git, dict) else ""
            commits[commit or "unknown"] = commits.get(commit or "unknown", 0) + 1
            clean = clean and bool(commit) and not git.get("dirty")
        index = {"format": FORMAT, "dataset": dataset, "data": prints.pop(), "runs": len(runs), "commits": commits,
                 "clean": clean, "ap_dtype": "float32" if float32 else "float64", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
        (tmp / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True))
        swap_folder(tmp, target)
    except OSError as exc:
        raise CmrBenchError(f"cannot write the archive into {out}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, index


# --- reading ---------------------------------------------------------------------------------


def _refuse(folder: Path, what: str) -> ReferenceError:
    return ReferenceError(f"reference archive {folder}: {what}; restore it (git checkout -- {folder}) or {NO_REFERENCE_HINT}")


def _read_json(path: Path, limit: int = MAX_INDEX_BYTES):
    with open(path, "rb") as fh:
        blob = fh.read(limit + 1)
    if len(blob) > limit:
        raise ValueError("too large")
    return json.loads(blob)


def load_archive(reference: Path | None, dataset: str) -> Archive | None:
    """The verified archive of `dataset` under `reference`, or None when there is none (no
    folder, or no archive for this dataset: today's behaviour, the user's runs alone)."""
    if reference is None:
        return None
    folder = Path(reference) / dataset
    index_path = folder / INDEX
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_symlink() or not folder.is_dir() or index_path.is_symlink() or not index_path.is_file():
        raise _refuse(folder, f"not a reference archive (no {INDEX})")
    try:
        index = _read_json(index_path)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _refuse(folder, f"{INDEX} is unreadable ({type(exc).__name__})") from None
    if (not isinstance(index, dict) or index.get("format") != FORMAT or index.get("dataset") != dataset
            or not isinstance(index.get("data"), str) or not index["data"] or not isinstance(index.get("files"), dict)):
        raise _refuse(folder, f"{INDEX} is not a format-{FORMAT} archive of '{dataset}'")
    files = index["files"]
    inside = folder.resolve()
    run_folders: set[Path] = set()
    for rel, meta in files.items():
        parts = rel.split("/") if isinstance(rel, str) else []
        if (len(parts) != 5 or any(not p or p.startswith(".") or p in ("..",) for p in parts) or parts[-1] not in RUN_FILES
                or not isinstance(meta, dict)):
            raise _refuse(folder, f"{INDEX} lists a file it cannot hold ({rel!r})")
        path = folder / rel
        try:
            ok = path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(inside) \
                and path.stat().st_size == meta.get("bytes") and path.stat().st_size <= MAX_FILE_BYTES \
                and sha256_file(path) == meta.get("sha256")
        except OSError:
            ok = False
        if not ok:
            raise _refuse(folder, f"{rel} does not match its sha256 in {INDEX} (edited, damaged or missing)")
        run_folders.add(path.parent)
    listed = {folder / rel for rel in files}
    for found in folder.rglob("*"):
        if found.is_file() and found.name in RUN_FILES and found not in listed:
            raise _refuse(folder, f"{found.relative_to(folder)} is not listed in {INDEX} (added by hand?)")
    archive = Archive(folder, index["data"], {str(k): v for k, v in dict(index.get("commits") or {}).items()},
                      bool(index.get("clean")))
    for run_folder in sorted(run_folders):
        if any(not (run_folder / name).is_file() for name in RUN_FILES):
            raise _refuse(folder, f"{run_folder.relative_to(folder)} lacks one of {', '.join(RUN_FILES)}")
        try:
            run = _read_json(run_folder / "run.json")
            metrics = _read_json(run_folder / "metrics.json")
            spec = run["spec"]
            ok = (run.get("status") == "done" and spec.get("dataset") == dataset and spec.get("data") == archive.data
                  and run_folder.name == f"seed-{spec['seed']}" and run_folder.parent.name.endswith(f"-{spec.get('config_hash')}")
                  and run_folder.parent.parent.name == spec.get("method") and run_folder.parents[2].name == spec.get("protocol")
                  and all(_metric_ok(v) for d in ("i2t", "t2i") for k, v in metrics[d].items()
                          if k.startswith(("map@", "p@"))))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
            ok = False
        if not ok:
            raise _refuse(folder, f"{run_folder.relative_to(folder)} is not a finished run of this archive's data")
        archive.runs.append((run_folder, run, metrics))
    if len(archive.runs) != index.get("runs"):
        raise _refuse(folder, f"{INDEX} says {index.get('runs')} runs, it holds {len(archive.runs)}")
    return archive


def combine(user_runs: list[tuple[Path, dict, dict | None]], reference: Path | None, dataset: str,
            local_fingerprint=None) -> tuple[list[tuple[Path, dict, dict | None]], Archive | None]:
    """The user's runs plus the archive's runs of every entry the user has no finished run of.
    Refused when the user's runs (or, without any, the data here: `local_fingerprint()`, None
    when it cannot be read) come from other data than the archive's."""
    archive = load_archive(reference, dataset)
    if archive is None:
        return user_runs, None
    prints = {str(run["spec"].get("data") or "") for _, run, _ in user_runs}
    here = None if prints else (local_fingerprint() if local_fingerprint else None)
    theirs = sorted(prints) if prints else ([here] if here else [])
    if theirs and theirs != [archive.data]:
        where = "your runs" if prints else "the data under the data root"
        raise ReferenceError(f"the reference archive {archive.folder} was made on other '{dataset}' data (fingerprint "
                             f"{archive.data}) than {where} (fingerprint {', '.join(t or 'none recorded' for t in theirs)}); "
                             f"a table never mixes them: {NO_REFERENCE_HINT}")
    mine = {entry_of(run["spec"]) for _, run, _ in user_runs if run.get("status") == "done"}
    added = [r for r in archive.runs if entry_of(r[1]["spec"]) not in mine]
    served = {entry_of(r[1]["spec"]) for r in added}  # the user's failed runs of these give way to finished ones
    kept = [r for r in user_runs if entry_of(r[1]["spec"]) not in served]
    if not archive.clean and archive.folder not in _WARNED:  # once per process, not per table
        _WARNED.add(archive.folder)
        print(f"cmr-bench: warning: reference archive {archive.describe()}", file=sys.stderr)
    return kept + added, archive


def is_reference(folder, archive: Archive | None) -> bool:
    return archive is not None and Path(folder).is_relative_to(archive.folder)
