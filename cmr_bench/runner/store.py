"""The results store: one folder per run, written to a temporary folder and renamed into
place when complete, so a crash never leaves a half-written run under its final name.

<runs>/<dataset>/<protocol>/<method>/<variant>[-<bits>bits]-<config hash>/seed-<k>/
    run.json      spec, resolved config, environment, split, timings, status (+ reason),
                  the sha256 of the other files ("files") and its own "digest" (over its
                  canonical form; runs written before it existed are checked without it)
    metrics.json  Img2Txt and Txt2Img: map@all, map@50, p@R, PR curves
    log.jsonl     the training log, one JSON object per line
    arrays.npz    codes of the query and retrieval splits, per-query APs, split indices
    cmr-bench-run the store's marker, written first: `runs clean` and the grid only ever
                  delete a folder that carries it (or an empty temp folder)

Beside a run folder there may be, for a moment, `.seed-<k>.tmp-<pid>-<ns>` (being written),
`.seed-<k>.old-<pid>-<ns>` (being replaced) and `.seed-<k>.lock` (the run's lock, see
lock.py). A run folder that fails validation (unreadable or incomplete files, checksums that
do not match, a file without a checksum, a run.json edited after it was written or whose
dataset/protocol/method/config/seed is not its folder's) is "corrupt": reported and redone,
never scored by `eval --run` and never in a table.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmr_bench.data.loader import sha256_file
from cmr_bench.errors import CmrBenchError, StoreError
from cmr_bench.runner.lock import RunLock, describe_owner, lock_path, probe, read_owner
from cmr_bench.safe_io import swap_folder

STATUS_DONE, STATUS_FAILED, STATUS_CORRUPT = "done", "failed", "corrupt"
SEED_DIR = re.compile(r"^seed-(-?\d+)$")
TEMP_DIR = re.compile(r"^\.(seed-.+)\.(tmp|old)-(\d+)-(\d+)$")
LOCK_FILE = re.compile(r"^\.(seed-.+)\.lock$")
CONFIG_DIR = re.compile(r"^(?P<tag>.+)-(?P<hash>[0-9a-f]{10})$")
MARKER = "cmr-bench-run"
MAX_JSON_BYTES = 64 << 20  # run.json/metrics.json larger than this are not ours


def store_error(action: str, path: Path, exc: OSError) -> StoreError:
    return StoreError.from_os(action, path, exc)


def has_marker(folder: Path) -> bool:
    """True when `folder` is a real folder (not a symlink) holding the store's marker file."""
    folder = Path(folder)
    try:
        return not folder.is_symlink() and folder.is_dir() and (folder / MARKER).is_file() and not (folder / MARKER).is_symlink()
    except OSError:
        return False


def removable(folder: Path) -> bool:
    """What the store may delete: a folder it wrote (marker) or an empty one; never a link."""
    folder = Path(folder)
    try:
        if folder.is_symlink() or not folder.is_dir():
            return False
        return has_marker(folder) or not any(folder.iterdir())
    except OSError:
        return False


def _load_json(path: Path):
    """json.loads for store files: a size limit, and deep nesting is just 'unreadable'."""
    with open(path, "rb") as fh:
        blob = fh.read(MAX_JSON_BYTES + 1)
    if len(blob) > MAX_JSON_BYTES:
        raise ValueError("too large")
    try:
        return json.loads(blob)
    except RecursionError:
        raise ValueError("nested too deep") from None


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


DIGEST_KEY = "digest"


def run_digest(run: dict) -> str:
    """sha256 of run.json's canonical form (sorted keys, no spaces), its own digest left out."""
    body = {k: v for k, v in run.items() if k != DIGEST_KEY}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    try:
        _write_run(folder, run, metrics, log, arrays)
    except OSError as exc:
        raise store_error("write the run", folder, exc) from None


def _write_run(folder: Path, run: dict[str, Any], metrics: dict | None, log: list[dict], arrays: dict[str, np.ndarray]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    if (folder.exists() or folder.is_symlink()) and not removable(folder):
        raise StoreError(f"results store: {folder} exists and is not a cmr-bench run folder (no {MARKER}); "
                         "move it away, nothing was written")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        (tmp / MARKER).write_text('{"format": 1}\n')  # first: from here on the folder is provably ours
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
            files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        # run.json last, with the checksums of the others: a folder is only as good as it says;
        # its digest (over its canonical form) makes an edit of run.json itself show.
        body = json.loads(json.dumps({**run, "files": files}, default=json_default))
        body[DIGEST_KEY] = run_digest(body)
        (tmp / "run.json").write_text(json.dumps(body, indent=2, sort_keys=True))
        _fsync_file(tmp / "run.json")
        _fsync_dir(tmp)
        swap_folder(tmp, folder)  # replacing a failed, corrupt or forced run, or a first write
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


def _expected_place(folder: Path) -> dict:
    """Dataset, protocol and method a folder in the store's layout must hold
    (<dataset>/<protocol>/<method>/<tag>-<hash>/seed-k); nothing for a folder elsewhere."""
    folder = Path(os.path.abspath(folder))  # "." and ".." spelled out, links not followed
    parents = folder.parents
    if len(parents) < 4 or not CONFIG_DIR.match(folder.parent.name):
        return {}
    return {"method": parents[1].name, "protocol": parents[2].name, "dataset": parents[3].name}


def _metric_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0


def validate_run(folder: Path, checksums: bool = True) -> RunState:
    """Check a run folder thoroughly enough to trust it: written by the store (marker, no
    symlinks), run.json readable and belonging to this folder, every file matching the sha256
    that run.json recorded, and metrics.json readable with both directions and every mAP and
    precision a number in [0, 1] for finished runs."""
    folder = Path(folder)
    try:
        if folder.is_symlink():
            return RunState(STATUS_CORRUPT, "a symlink, not a run folder")
        if not folder.exists():
            return RunState(None)
        if not folder.is_dir():
            return RunState(STATUS_CORRUPT, "not a folder")
        if not has_marker(folder):
            return RunState(STATUS_CORRUPT, f"not written by the cmr-bench store (no {MARKER})")
        path = folder / "run.json"
        if not path.is_file() or path.is_symlink():
            return RunState(STATUS_CORRUPT, "run.json is missing (half-written or edited folder)")
    except OSError as exc:
        return RunState(STATUS_CORRUPT, f"unreadable ({exc.strerror or exc})")
    try:
        run = _load_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return RunState(STATUS_CORRUPT, f"run.json is unreadable ({type(exc).__name__})")
    if not isinstance(run, dict) or run.get("status") not in (STATUS_DONE, STATUS_FAILED) or not isinstance(run.get("spec"), dict):
        return RunState(STATUS_CORRUPT, "run.json lacks a valid status or spec")
    spec = run["spec"]
    if DIGEST_KEY in run and run[DIGEST_KEY] != run_digest(run):
        return RunState(STATUS_CORRUPT, "run.json does not match its digest (edited after it was written)")
    # Runs written before the digest existed are accepted on the checks below alone: every
    # file listed with a matching sha256, nothing unlisted, and the folder's names matching.
    where = _expected_place(folder)
    for key, name in where.items():
        if spec.get(key) != name:
            return RunState(STATUS_CORRUPT, f"run.json is for {key} {spec.get(key)!r}, its folder for {name!r}")
    expected = _expected_identity(folder)
    if "seed" in expected and spec.get("seed") != expected["seed"]:
        return RunState(STATUS_CORRUPT, f"run.json is for seed {spec.get('seed')}, the folder for seed {expected['seed']}")
    if "config_hash" in expected and spec.get("config_hash") != expected["config_hash"]:
        return RunState(STATUS_CORRUPT, "run.json's config hash does not match its folder")
    files = run.get("files")
    # No legacy path: a run.json without checksums cannot vouch for its metrics.
    if not isinstance(files, dict) or (run["status"] == STATUS_DONE and "metrics.json" not in files):
        return RunState(STATUS_CORRUPT, "run.json has no valid 'files' checksums (edited or written by an old version)")
    try:  # a file the record does not vouch for (its entry removed) would be read unchecked
        unlisted = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name not in ("run.json", MARKER))
    except OSError as exc:
        return RunState(STATUS_CORRUPT, f"unreadable ({exc.strerror or exc})")
    if unlisted:
        return RunState(STATUS_CORRUPT, f"{unlisted[0]} has no checksum in run.json (entry removed or file added)")
    for name, meta in files.items():
        if not isinstance(name, str) or "/" in name or name.startswith(".") or name == "run.json":
            return RunState(STATUS_CORRUPT, "run.json 'files' is malformed")
        p = folder / name
        try:
            if not p.is_file() or p.is_symlink():
                return RunState(STATUS_CORRUPT, f"{name} is missing")
            if not isinstance(meta, dict) or p.stat().st_size != meta.get("bytes"):
                return RunState(STATUS_CORRUPT, f"{name} has the wrong size (truncated or edited)")
            if checksums and sha256_file(p) != meta.get("sha256"):
                return RunState(STATUS_CORRUPT, f"{name} does not match its recorded sha256 (edited or damaged)")
        except OSError as exc:
            return RunState(STATUS_CORRUPT, f"{name} is unreadable ({exc.strerror or exc})")
    metrics = None
    if run["status"] == STATUS_DONE:
        try:
            metrics = _load_json(folder / "metrics.json")
            for d in ("i2t", "t2i"):
                if not _metric_ok(metrics[d]["map@all"]):
                    return RunState(STATUS_CORRUPT, f"metrics.json {d} map@all is not a number in [0, 1]")
                for k, v in metrics[d].items():
                    if (k.startswith("map@") or k.startswith("p@")) and not _metric_ok(v):
                        return RunState(STATUS_CORRUPT, f"metrics.json {d} {k} is not a number in [0, 1]")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return RunState(STATUS_CORRUPT, "metrics.json is unreadable or incomplete")
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
        if not removable(p):  # not provably ours: leave it (and say so)
            done.append(f"left {p.name} alone: not written by the store")
            continue
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}")
    return done


def tidy(folder: Path) -> None:
    """A finished run may still have a lock file or a temp folder beside it, left by a process
    killed just after the run was written: remove them (unless someone holds the lock)."""
    if not lock_path(folder).exists() and not leftovers(folder):
        return
    lock = RunLock(folder)
    if lock.acquire():
        try:
            recover(folder)
        finally:
            lock.release()


# --- claiming a run: the one way to write into the store -----------------------------------


class Claim:
    """A run folder held by this process, from the first look until its run is written: the
    lock is held, leftovers of an interrupted write are tidied (`notes` says what was done) and
    `state` is what the folder holds now. `commit` writes a run and releases the lock; `release`
    gives the folder up unwritten."""

    def __init__(self, folder: Path, lock: RunLock, notes: list[str], state: RunState):
        self.folder, self._lock, self.notes, self.state = folder, lock, notes, state

    def commit(self, record) -> None:
        """Write `record` (its run, metrics, log and arrays: an execute.RunRecord) atomically;
        the lock is released whether the write succeeds or not."""
        try:
            write_run(self.folder, record.run, record.metrics, record.log, record.arrays)
        finally:
            self.release()

    def release(self) -> None:
        self._lock.release()


def claim(folder: Path) -> Claim | None:
    """Take a run folder for this process: lock it, tidy what a crash left, validate what is
    there. None when another process holds it (`holder` says who)."""
    folder = Path(folder)
    lock = RunLock(folder)
    if not lock.acquire():
        return None
    try:
        notes = recover(folder)
        state = validate_run(folder)
    except BaseException:
        lock.release()
        raise
    return Claim(folder, lock, notes, state)


def holder(folder: Path) -> str:
    """Who holds a run folder's lock, in words."""
    return describe_owner(read_owner(lock_path(Path(folder))))


# --- reading the store ---------------------------------------------------------------------


def iter_runs(runs_dir: Path, dataset: str | None = None, data: str | None = None):
    """Yield (folder, run.json, metrics.json or None) for every stored run that validates,
    skipping temp folders. A corrupt or hand-edited run is reported on stderr and left out,
    so it never reaches a table (the next `cmr-bench run` redoes it). For one dataset, runs of
    different data (spec.data, see Dataset.fingerprint) are never mixed: `data` picks one,
    and without it a store holding more than one is an error."""
    runs_dir = Path(runs_dir)
    if not dataset:
        return _iter_runs(runs_dir, dataset)
    from cmr_bench.paths import check_component

    check_component(dataset, "dataset name")  # before the first run is read, not lazily
    runs = [r for r in _iter_runs(runs_dir, dataset) if data is None or str(r[1]["spec"].get("data") or "") == data]
    prints: dict[str, int] = {}
    for _, run, _ in runs:
        key = str(run["spec"].get("data") or "")
        prints[key] = prints.get(key, 0) + 1
    if len(prints) > 1:
        shown = ", ".join(f"{fp or 'none recorded'} ({n} runs)" for fp, n in sorted(prints.items()))
        raise CmrBenchError(f"runs of dataset '{dataset}' in {runs_dir} come from {len(prints)} different data "
                            f"(fingerprints {shown}); tables and figures never mix them: keep one in this results "
                            "dir and move the others to another --results-dir")
    return iter(runs)


def _iter_runs(runs_dir: Path, dataset: str | None):
    base = runs_dir / dataset if dataset else runs_dir
    if not base.is_dir() or base.is_symlink():
        return
    for run_file in sorted(base.rglob("run.json")):
        folder = run_file.parent
        if any(part.startswith(".") for part in folder.relative_to(runs_dir).parts):
            continue
        if not SEED_DIR.match(folder.name):
            continue  # not a run folder, whatever it holds
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
    overrides: dict | None = None  # --set key=value of the run
    config: str = ""  # "default" or "tuned" (run --config tuned); "" when unknown (no readable run.json)


def _parse_config_dir(name: str) -> tuple[str, int | None]:
    m = CONFIG_DIR.match(name)
    tag = m.group("tag") if m else name
    bits = None
    tag = re.sub(r"-(set-.*|t\d+)$", "", tag)  # what spec.folder() adds for --set and --threads
    b = re.match(r"^(.*)-(\d+)bits$", tag)
    if b:
        tag, bits = b.group(1), int(b.group(2))
    if tag == "tuned" or tag.startswith("tuned-"):  # run --config tuned: tuned[-<variant>]
        tag = tag[len("tuned-"):] if tag != "tuned" else ""
    return ("" if tag == "default" else tag), bits


def scan_store(runs_dir: Path, dataset: str | None = None, checksums: bool = True) -> list[StoreEntry]:
    """Every run folder (validated), temporary folder and lock file in the store."""
    runs_dir = Path(runs_dir)
    base = runs_dir / dataset if dataset else runs_dir
    entries: list[StoreEntry] = []
    if not base.is_dir() or base.is_symlink():
        return entries
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        rel = here.relative_to(runs_dir).parts
        dirnames.sort()
        keep = []
        for d in dirnames:
            if (here / d).is_symlink():
                continue  # never followed, never listed, never removed
            if TEMP_DIR.match(d):
                entries.append(StoreEntry("temp", here / d, *_where(rel), status="temp"))
            elif SEED_DIR.match(d):
                entries.append(_run_entry(here / d, rel, checksums))
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            m = LOCK_FILE.match(f)
            if m and not (here / f).is_symlink():
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
        entry.overrides = spec.get("overrides") or None
        entry.config = str(spec.get("config_source", "default"))
        if state.status == STATUS_FAILED:
            entry.problem = str(state.run.get("reason", ""))
    if state.metrics:
        entry.map = (float(state.metrics["i2t"]["map@all"]) + float(state.metrics["t2i"]["map@all"])) / 2
    return entry
