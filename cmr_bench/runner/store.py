"""The results store: one folder per run, written to a temporary folder and renamed into
place when complete, so a crash never leaves a half-written run under its final name.

<runs>/<dataset>/<protocol>/<method>/<variant>[-<bits>bits]-<config hash>/seed-<k>/
    run.json      spec, resolved config, environment, split, timings, status (+ reason),
                  and the sha256 of the other files ("files")
    metrics.json  Img2Txt and Txt2Img: map@all, map@50, p@R, PR curves
    log.jsonl     the training log, one JSON object per line
    arrays.npz    codes of the query and retrieval splits, per-query APs, split indices

Beside a run folder there may be, for a moment, `.seed-<k>.tmp-<pid>-<ns>` (being written),
`.seed-<k>.old-<pid>-<ns>` (being replaced) and `.seed-<k>.lock` (the run's lock, see
lock.py). A run folder that fails validation (unreadable or incomplete files, checksums that
do not match, a run.json that belongs to another folder) is "corrupt": reported and redone.
"""

from __future__ import annotations

import hashlib
import json
import sys
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STATUS_DONE, STATUS_FAILED, STATUS_CORRUPT = "done", "failed", "corrupt"
SEED_DIR = re.compile(r"^seed-(-?\d+)$")
TEMP_DIR = re.compile(r"^\.(seed-.+)\.(tmp|old)-(\d+)-(\d+)$")
LOCK_FILE = re.compile(r"^\.(seed-.+)\.lock$")
CONFIG_DIR = re.compile(r"^(?P<tag>.+)-(?P<hash>[0-9a-f]{10})$")


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # torch tensors in a training log
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_run(folder: Path, run: dict[str, Any], metrics: dict | None, log: list[dict], arrays: dict[str, np.ndarray]) -> None:
    """Write a run into a temporary sibling folder, fsync it, and rename it into place. The
    caller holds the run's lock (lock.py), so no one else writes this folder meanwhile."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        written = []
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=json_default))
            written.append("metrics.json")
        with open(tmp / "log.jsonl", "w") as fh:
            for row in log:
                fh.write(json.dumps(row, default=json_default) + "\n")
        written.append("log.jsonl")
        if arrays:
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            written.append("arrays.npz")
        files = {}
        for name in written:
            _fsync_file(tmp / name)
            files[name] = {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
        # run.json last, with the checksums of the others: a folder is only as good as it says.
        (tmp / "run.json").write_text(json.dumps({**run, "files": files}, indent=2, sort_keys=True, default=json_default))
        _fsync_file(tmp / "run.json")
        _fsync_dir(tmp)
        if folder.exists():  # replacing a failed, corrupt or forced run
            old = folder.parent / f".{folder.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
        _fsync_dir(folder.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- validation ---------------------------------------------------------------------------


@dataclass
class RunState:
    status: str | None  # "done", "failed", "corrupt" or None (no folder)
    problem: str = ""  # why a folder is corrupt
    run: dict | None = None
    metrics: dict | None = None


def _expected_identity(folder: Path) -> dict:
    """What the folder's path says about the run it must hold."""
    out: dict[str, Any] = {}
    m = SEED_DIR.match(folder.name)
    if m:
        out["seed"] = int(m.group(1))
    c = CONFIG_DIR.match(folder.parent.name)
    if c:
        out["config_hash"] = c.group("hash")
    return out


def validate_run(folder: Path, checksums: bool = True) -> RunState:
    """Check a run folder thoroughly enough to trust it: run.json readable and belonging to
    this folder, metrics.json readable with both directions for finished runs, and every file
    matching the sha256 that run.json recorded (runs written before checksums were recorded
    are checked for readable files instead)."""
    folder = Path(folder)
    if not folder.exists():
        return RunState(None)
    if not folder.is_dir():
        return RunState(STATUS_CORRUPT, "not a folder")
    path = folder / "run.json"
    if not path.is_file():
        return RunState(STATUS_CORRUPT, "run.json is missing (half-written or edited folder)")
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return RunState(STATUS_CORRUPT, f"run.json is unreadable ({type(exc).__name__})")
    if not isinstance(run, dict) or run.get("status") not in (STATUS_DONE, STATUS_FAILED) or not isinstance(run.get("spec"), dict):
        return RunState(STATUS_CORRUPT, "run.json lacks a valid status or spec")
    spec = run["spec"]
    expected = _expected_identity(folder)
    if "seed" in expected and spec.get("seed") != expected["seed"]:
        return RunState(STATUS_CORRUPT, f"run.json is for seed {spec.get('seed')}, the folder for seed {expected['seed']}")
    if "config_hash" in expected and spec.get("config_hash") != expected["config_hash"]:
        return RunState(STATUS_CORRUPT, "run.json's config hash does not match its folder")
    files = run.get("files")
    if files is not None:
        if not isinstance(files, dict):
            return RunState(STATUS_CORRUPT, "run.json 'files' is malformed")
        for name, meta in files.items():
            p = folder / name
            if not p.is_file():
                return RunState(STATUS_CORRUPT, f"{name} is missing")
            if not isinstance(meta, dict) or p.stat().st_size != meta.get("bytes"):
                return RunState(STATUS_CORRUPT, f"{name} has the wrong size (truncated or edited)")
            if checksums and _sha256(p) != meta.get("sha256"):
                return RunState(STATUS_CORRUPT, f"{name} does not match its recorded sha256 (edited or damaged)")
    metrics = None
    if run["status"] == STATUS_DONE:
        mpath = folder / "metrics.json"
        if not mpath.is_file():
            return RunState(STATUS_CORRUPT, "metrics.json is missing")
        try:
            metrics = json.loads(mpath.read_text())
            for d in ("i2t", "t2i"):
                float(metrics[d]["map@all"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return RunState(STATUS_CORRUPT, "metrics.json is unreadable or incomplete")
        if files is None:  # older run: at least the archive must be readable
            apath = folder / "arrays.npz"
            try:
                with zipfile.ZipFile(apath) as zf:
                    zf.namelist()
            except (OSError, zipfile.BadZipFile):
                return RunState(STATUS_CORRUPT, "arrays.npz is missing or unreadable")
    return RunState(run["status"], "", run, metrics)


def read_status(folder: Path) -> str | None:
    """'done', 'failed', 'corrupt' (see validate_run), or None (absent)."""
    return validate_run(folder).status


# --- housekeeping around one run (called with its lock held) -------------------------------


def leftovers(folder: Path) -> list[Path]:
    """Temporary and replaced-aside copies of this run (`.seed-k.tmp-*`, `.seed-k.old-*`)."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return []
    return sorted(p for p in folder.parent.iterdir() if (m := TEMP_DIR.match(p.name)) and m.group(1) == folder.name)


def recover(folder: Path) -> list[str]:
    """Tidy what a crash left around a run, with its lock held. A crash between the two
    renames of a replacement leaves the old copy aside and no folder: put it back (it is the
    last complete result). Everything else left over is removed. Returns what was done."""
    folder = Path(folder)
    done = []
    rest = leftovers(folder)
    if not folder.exists():
        olds = [p for p in rest if TEMP_DIR.match(p.name).group(2) == "old" and validate_run(p).status in (STATUS_DONE, STATUS_FAILED)]
        if olds:
            keep = max(olds, key=lambda p: int(TEMP_DIR.match(p.name).group(4)))
            os.rename(keep, folder)
            done.append(f"restored {keep.name}")
            rest = [p for p in rest if p != keep]
    for p in rest:
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}")
    return done


def iter_runs(runs_dir: Path, dataset: str | None = None):
    """Yield (folder, run.json, metrics.json or None) for every stored run that validates,
    skipping temp folders. A corrupt or hand-edited run is reported on stderr and left out,
    so it never reaches a table (the next `cmr-bench run` redoes it)."""
    runs_dir = Path(runs_dir)
    base = runs_dir / dataset if dataset else runs_dir
    if not base.is_dir():
        return
    for run_file in sorted(base.rglob("run.json")):
        folder = run_file.parent
        if any(part.startswith(".") for part in folder.relative_to(runs_dir).parts):
            continue
        state = validate_run(folder)
        if state.status == STATUS_CORRUPT:
            print(f"cmr-bench: warning: skipping corrupt run {folder}: {state.problem}", file=sys.stderr)
            continue
        yield folder, state.run, state.metrics


# --- the whole store, for `cmr-bench runs list|clean` --------------------------------------


@dataclass
class StoreEntry:
    kind: str  # "run", "temp" or "lock"
    path: Path
    dataset: str = ""
    protocol: str = ""
    method: str = ""
    variant: str = ""
    bits: int | None = None
    seed: int | None = None
    status: str = ""  # runs: done/failed/corrupt/running; temp: temp; lock: held/stale
    problem: str = ""
    map: float | None = None
    owner: dict | None = None


def _parse_config_dir(name: str) -> tuple[str, int | None]:
    m = CONFIG_DIR.match(name)
    tag = m.group("tag") if m else name
    bits = None
    b = re.match(r"^(.*)-(\d+)bits$", tag)
    if b:
        tag, bits = b.group(1), int(b.group(2))
    return ("" if tag == "default" else tag), bits


def scan_store(runs_dir: Path, dataset: str | None = None, checksums: bool = True) -> list[StoreEntry]:
    """Every run folder (validated), temporary folder and lock file in the store."""
    from cmr_bench.runner.lock import probe, read_owner

    runs_dir = Path(runs_dir)
    base = runs_dir / dataset if dataset else runs_dir
    entries: list[StoreEntry] = []
    if not base.is_dir():
        return entries
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        rel = here.relative_to(runs_dir).parts
        dirnames.sort()
        keep = []
        for d in dirnames:
            if TEMP_DIR.match(d):
                entries.append(StoreEntry("temp", here / d, *_where(rel), status="temp"))
            elif SEED_DIR.match(d):
                entries.append(_run_entry(here / d, rel, checksums))
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            m = LOCK_FILE.match(f)
            if m:
                state = probe(here / f)
                entries.append(StoreEntry("lock", here / f, *_where(rel), seed=_seed_of(m.group(1)),
                                          status=state, owner=read_owner(here / f)))
    # a run in flight: its lock is held and there may be no folder yet
    held = {e.path.parent / LOCK_FILE.match(e.path.name).group(1) for e in entries if e.kind == "lock" and e.status == "held"}
    runs = {e.path for e in entries if e.kind == "run"}
    for e in entries:
        if e.kind == "run" and e.path in held:
            e.status, e.owner = "running", read_owner(e.path.parent / f".{e.path.name}.lock")
    for folder in sorted(held - runs):
        entries.append(StoreEntry("run", folder, *_where(folder.parent.relative_to(runs_dir).parts), seed=_seed_of(folder.name),
                                  status="running", owner=read_owner(folder.parent / f".{folder.name}.lock")))
    return entries


def _seed_of(name: str) -> int | None:
    m = SEED_DIR.match(name)
    return int(m.group(1)) if m else None


def _where(rel: tuple[str, ...]) -> tuple[str, str, str, str, int | None]:
    parts = list(rel) + [""] * (4 - len(rel))
    variant, bits = _parse_config_dir(parts[3]) if parts[3] else ("", None)
    return parts[0], parts[1], parts[2], variant, bits


def _run_entry(folder: Path, rel: tuple[str, ...], checksums: bool) -> StoreEntry:
    state = validate_run(folder, checksums=checksums)
    entry = StoreEntry("run", folder, *_where(rel), seed=_seed_of(folder.name), status=state.status or STATUS_CORRUPT,
                       problem=state.problem)
    if state.run:
        spec = state.run["spec"]
        entry.variant, entry.bits = spec.get("variant", entry.variant), spec.get("bits", entry.bits)
        if state.status == STATUS_FAILED:
            entry.problem = str(state.run.get("reason", ""))
    if state.metrics:
        entry.map = (float(state.metrics["i2t"]["map@all"]) + float(state.metrics["t2i"]["map@all"])) / 2
    return entry
