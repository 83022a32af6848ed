"""`cmr-bench runs list|clean`: show and tidy the results store."""

from __future__ import annotations

import shutil
from pathlib import Path

from cmr_bench.commands._common import DATASET_HELP, print_json, print_table
from cmr_bench.commands.run import DEFAULT_RESULTS
from cmr_bench.errors import CmrBenchError

ORDER = 25
STATUSES = ("done", "failed", "corrupt", "running")


def register(sub) -> None:
    parser = sub.add_parser("runs", help="list the stored runs, or clean up temp folders, stale locks, corrupt and failed runs")
    rsub = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    p = rsub.add_parser("list", help="every stored run: dataset/protocol/method/variant/bits/seed/status/map")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="run store (default results/runs)")
    p.add_argument("--dataset", default=None, help="only this dataset: " + DATASET_HELP)
    p.add_argument("--status", default=None, help=f"only these statuses (comma list of {', '.join(STATUSES)})")
    p.add_argument("--no-checksums", action="store_true", help="skip the sha256 checks (faster on big stores)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = rsub.add_parser("clean", help="remove temp folders (.*.tmp-*), stale locks, corrupt and failed runs")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="run store (default results/runs)")
    p.add_argument("--dataset", default=None, help="only this dataset: " + DATASET_HELP)
    p.add_argument("--keep-failed", action="store_true", help="leave failed runs in place")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    p.set_defaults(handler=cmd_clean)


def _store(args) -> Path:
    from cmr_bench.commands._common import dataset_name

    runs_dir = Path(args.results_dir)
    try:
        ok = runs_dir.is_dir()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise CmrBenchError(f"no results store at {ascii(str(runs_dir))[1:-1]} (use --results-dir)")
    if args.dataset is not None:
        args.dataset = dataset_name(args)  # a name or a manifest path, as for `run`
    if args.dataset is not None and not (runs_dir / args.dataset).is_dir():
        known = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise CmrBenchError(f"no runs of dataset '{args.dataset}' in {runs_dir} (has: {', '.join(known) or 'nothing'})")
    return runs_dir


def cmd_list(args) -> int:
    from cmr_bench.report.results import overrides_text  # --set runs: what was set (issue 19)
    from cmr_bench.runner.lock import describe_owner
    from cmr_bench.runner.store import scan_store

    wanted = None
    if args.status:
        wanted = {s.strip() for s in args.status.split(",") if s.strip()}
        bad = wanted - set(STATUSES)
        if bad or not wanted:
            raise CmrBenchError(f"--status: unknown {', '.join(sorted(bad)) or 'nothing'} (choose from {', '.join(STATUSES)})")
    runs_dir = _store(args)
    entries = scan_store(runs_dir, args.dataset, checksums=not args.no_checksums)
    runs = [e for e in entries if e.kind == "run" and (wanted is None or e.status in wanted)]
    temps = [e for e in entries if e.kind == "temp"]
    stale = [e for e in entries if e.kind == "lock" and e.status == "stale"]
    rows = []
    for e in runs:
        note = e.problem
        if e.status == "running":
            note = describe_owner(e.owner or {})
        rows.append({"dataset": e.dataset, "protocol": e.protocol, "method": e.method, "variant": e.variant,
                     "bits": e.bits, "config": e.config, "set": overrides_text(e.overrides).strip(" {}"), "seed": e.seed, "status": e.status,
                     "map": None if e.map is None else round(e.map, 4), "note": note, "folder": str(e.path)})
    if args.json:
        print_json({"results_dir": str(runs_dir), "runs": rows, "temp_folders": [str(e.path) for e in temps],
                    "stale_locks": [str(e.path) for e in stale]})
        return 0
    if rows:
        print_table([{**{k: r[k] for k in ("dataset", "protocol", "method", "variant", "bits", "config", "set", "seed", "status")},
                      "map": "" if r["map"] is None else f"{r['map']:.4f}", "note": r["note"][:70]} for r in rows])
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
          f"; {len(temps)} temp folder(s), {len(stale)} stale lock(s)")
    if temps or stale or counts["corrupt"]:
        print("`cmr-bench runs clean` removes temp folders, stale locks, corrupt and failed runs (--dry-run to preview)")
    return 0


def cmd_clean(args) -> int:
    """Plan first, then act on exactly the plan: --dry-run prints the same lines with
    "would remove". Only what the store provably wrote is ever deleted: run and temp folders
    with its marker file (or empty temp folders), stale lock files; never a symlink, never
    anything a live process holds; afterwards only the folders this emptied are pruned."""
    from cmr_bench.runner.lock import RunLock, break_stale, probe
    from cmr_bench.runner.store import MARKER, TEMP_DIR, removable, scan_store

    runs_dir = _store(args)
    entries = scan_store(runs_dir, args.dataset)
    targets = []  # (entry, why)
    left = []  # (entry, why not)
    for e in entries:
        if e.kind == "temp":
            why = "temp folder"
        elif e.kind == "lock" and e.status == "stale":
            why = "stale lock"
        elif e.kind == "run" and e.status == "corrupt":
            why = f"corrupt run ({e.problem})"
        elif e.kind == "run" and e.status == "failed" and not args.keep_failed:
            why = f"failed run ({e.problem})" if e.problem else "failed run"
        else:
            continue
        if e.kind != "lock" and not removable(e.path):
            left.append((e, f"not a folder the store wrote (no {MARKER}); left alone"))
            continue
        run_name = TEMP_DIR.match(e.path.name).group(1) if e.kind == "temp" else e.path.name
        lock_file = e.path if e.kind == "lock" else e.path.parent / f".{run_name}.lock"
        if e.kind != "lock" and probe(lock_file) == "held":
            left.append((e, "its run is in progress"))
            continue
        targets.append((e, why))
    removed = skipped = 0
    gone: set[Path] = set()
    for e, why in targets:
        rel = e.path.relative_to(runs_dir)
        if args.dry_run:
            print(f"would remove {rel}: {why}")
            removed += 1
            gone.add(e.path)
            continue
        try:
            if e.kind == "lock":
                ok = break_stale(e.path)
            else:  # take the run's lock, so nothing that started meanwhile is touched
                run_name = TEMP_DIR.match(e.path.name).group(1) if e.kind == "temp" else e.path.name
                lock = RunLock(e.path.parent / run_name)
                ok = lock.acquire()
                if ok:
                    try:
                        if removable(e.path):  # checked again under the lock
                            shutil.rmtree(e.path)
                        else:
                            ok = False
                    finally:
                        lock.release()
        except (OSError, CmrBenchError) as exc:
            print(f"kept {rel}: {getattr(exc, 'strerror', None) or exc}")
            skipped += 1
            continue
        if ok:
            print(f"removed {rel}: {why}")
            removed += 1
            gone.add(e.path)
        else:
            print(f"kept {rel}: taken by a live process meanwhile")
            skipped += 1
    for e, why in left:
        print(f"kept {e.path.relative_to(runs_dir)}: {why}")
    for folder in _emptied(gone, runs_dir, dry=args.dry_run):
        print(f"{'would remove' if args.dry_run else 'removed'} {folder.relative_to(runs_dir)}/: empty after cleaning")
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {removed} item(s)" + (f", kept {skipped} in use" if skipped else "")
          + (f", left {len(left)} alone" if left else ""))
    return 0


def _emptied(gone: set[Path], runs_dir: Path, dry: bool) -> list[Path]:
    """Parents of removed items (below runs_dir) that are now empty, innermost first; removed
    unless `dry` (then: those that would be empty). Never a symlink, never runs_dir itself."""
    out: list[Path] = []
    gone = set(gone)
    candidates = sorted({p for g in gone for p in g.parents if runs_dir in p.parents}, key=lambda p: len(p.parts), reverse=True)
    for folder in candidates:
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            if any(child not in gone for child in folder.iterdir()):
                continue
            if not dry:
                folder.rmdir()
        except OSError:
            continue
        gone.add(folder)
        out.append(folder)
    return out
