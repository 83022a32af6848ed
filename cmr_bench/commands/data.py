"""`cmr-bench data list|info|verify|fetch|import`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmr_bench.commands._common import print_json, print_table, root_of

ORDER = 10


def register(sub) -> None:
    parser = sub.add_parser("data", help="list, inspect, verify, fetch and import datasets")
    dsub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("list", help="every dataset and whether its files are complete, partial or missing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = dsub.add_parser("info", help="manifest facts plus measured shapes and class counts")
    p.add_argument("name", help="dataset name or path to a manifest .toml")
    p.add_argument("--json", action="store_true", help="machine-readable output (every field)")
    p.set_defaults(handler=cmd_info)

    p = dsub.add_parser("verify", help="checksums and shapes; exit 0 only when complete and valid")
    p.add_argument("name", nargs="?", help="one dataset (default: every dataset with files present)")
    p.set_defaults(handler=cmd_verify)

    p = dsub.add_parser("fetch", help="download from the public source into the data root")
    p.add_argument("name", help="dataset name (see `cmr-bench data list`)")
    p.add_argument("--base-url", default=None, help="download <base-url>/<file> instead (a mirror); env CMR_BENCH_MIRROR=<url> serves <url>/<dataset>/<file>")
    p.add_argument("--force", action="store_true", help="download again even when present and valid")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar")
    p.set_defaults(handler=cmd_fetch)

    p = dsub.add_parser("import", help="copy (or link) your folder of dataset files into the data root and verify it")
    p.add_argument("name", help="dataset name (its manifest says which files to expect)")
    p.add_argument("path", help="your folder holding the dataset's files")
    p.add_argument("--link", action="store_true", help="symlink instead of copying")
    p.set_defaults(handler=cmd_import)


def _manifests(args, errors: dict | None = None):
    """Every manifest; a malformed one in the data root is reported on stderr (or collected
    in `errors`) and left out, never hiding the others."""
    import sys

    from cmr_bench.data.manifest import all_manifests

    collected: dict[str, str] = {} if errors is None else errors
    found = all_manifests(root_of(args), errors=collected)
    if errors is None:
        for name, problem in collected.items():
            print(f"cmr-bench: warning: skipping dataset '{name}': {problem}", file=sys.stderr)
    return found


def cmd_list(args) -> int:
    from cmr_bench.data.loader import dataset_state, file_status, files_dir

    root = root_of(args)
    rows = []
    bad: dict[str, str] = {}
    for name, m in _manifests(args, bad).items():
        state = dataset_state(m, root)
        missing = [] if m.split_kind == "synthetic" else [s.path for s in file_status(m, files_dir(m, root)) if not s.present]
        rows.append({"name": name, "state": state, "label_kind": m.label_kind, "classes": m.num_classes,
                     "splits": m.split.get("sizes", {}), "missing": missing, "title": m.title})
    for name, problem in bad.items():
        rows.append({"name": name, "state": "malformed", "label_kind": "", "classes": "", "splits": {},
                     "missing": [], "title": "", "problem": problem})
    if args.json:
        print_json({"data_root": str(root), "datasets": rows})
        return 0
    print(f"data root: {root}")
    print_table([{"dataset": r["name"], "state": r["state"], "labels": r["label_kind"], "classes": r["classes"],
                  "splits": " / ".join(f"{k} {v:,}" for k, v in r["splits"].items()),
                  "missing files": ", ".join(r["missing"]) if r["state"] == "partial" else ""} for r in rows])
    for r in rows:
        if r["state"] == "malformed":
            print(f"{r['name']}: {r['problem']}")
    return 0


def dataset_info(name: str, root: Path) -> dict:
    from cmr_bench.data.loader import dataset_state, file_status, files_dir, load_dataset
    from cmr_bench.data.manifest import find_manifest

    m = find_manifest(name, root)
    state = dataset_state(m, root)
    info = {
        "name": m.name, "title": m.title, "state": state, "manifest": str(m.path),
        "label_kind": m.label_kind, "num_classes": m.num_classes, "class_names": m.class_names,
        "image_dim": m.image_dim, "text_dim": m.text_dim,
        "image_features": m.raw.get("image_features", ""), "text_features": m.raw.get("text_features", ""),
        "splits": {k: {"size": v, "measured": False} for k, v in m.split.get("sizes", {}).items()},
        "split_kind": m.split_kind,
        "protocols": {p.name: {"train": p.train, "query": p.query, "retrieval": p.retrieval, "description": p.description}
                      for p in m.protocols.values()},
        "layout": m.raw.get("layout", ""), "source": m.source, "citation": m.raw.get("citation", ""),
        "terms": m.raw.get("terms", ""),
    }
    if m.split_kind != "synthetic":
        folder = files_dir(m, root)
        info["folder"] = str(folder)
        info["files"] = [{"path": s.path, "present": s.present, "bytes": s.size} for s in file_status(m, folder)]
    if state in ("complete", "generated"):
        ds = load_dataset(m.path, root)
        info["image_dim"], info["text_dim"] = ds.image_dim, ds.text_dim
        for split_name, split in ds.splits.items():
            counts = split.labels.sum(0) if split.multilabel else np.bincount(split.labels, minlength=ds.num_classes)
            info["splits"][split_name] = {"size": len(split), "measured": True, "class_counts": counts.tolist()}
    return info


def cmd_info(args) -> int:
    info = dataset_info(args.name, root_of(args))
    if args.json:
        print_json(info)
        return 0
    print(f"{info['name']}: {info['title']} [{info['state']}]")
    features = lambda what: f" ({info[what]})" if info.get(what) else ""  # noqa: E731 - no empty "()"
    print(f"  image {info['image_dim']}-d{features('image_features')}, text {info['text_dim']}-d{features('text_features')}")
    print(f"  {info['num_classes']} classes, {info['label_kind']}-label" + (f": {', '.join(info['class_names'])}" if info["class_names"] else ""))
    for name, s in info["splits"].items():
        counts = f"  class counts {s['class_counts']}" if "class_counts" in s else "  (declared, files not all present)"
        print(f"  split {name}: {s['size']:,}{counts}")
    for name, p in info["protocols"].items():
        print(f"  protocol {name}: train={p['train']} query={p['query']} retrieval={p['retrieval']} - {p['description']}")
    for f in info.get("files", []):
        print(f"  file {f['path']}: {'present' if f['present'] else 'MISSING'}")
    if info.get("folder"):
        print(f"  folder: {info['folder']}")
    if (info.get("source") or {}).get("homepage"):
        print(f"  source: {info['source']['homepage']}")
    print(f"  cite: {info['citation']}")
    print(f"  terms: {info['terms']}")
    return 0


def _print_report(report) -> None:
    print(f"{report.dataset}: {'OK' if report.ok else 'NOT OK'}")
    for line in report.lines:
        print(f"  {line}")


def cmd_verify(args) -> int:
    from cmr_bench.data.fetch import verify
    from cmr_bench.data.loader import dataset_state
    from cmr_bench.data.manifest import find_manifest

    root = root_of(args)
    if args.name:
        manifests = [find_manifest(args.name, root)]
    else:
        manifests = [m for m in _manifests(args).values() if dataset_state(m, root) in ("complete", "partial")]
    ok = True
    for m in manifests:
        report = verify(m, root)
        _print_report(report)
        ok = ok and report.ok
    return 0 if ok else 2


def cmd_fetch(args) -> int:
    from cmr_bench.data.fetch import fetch
    from cmr_bench.data.manifest import find_manifest

    root = root_of(args)
    report = fetch(find_manifest(args.name, root), root, base_url=args.base_url, force=args.force, progress=not args.no_progress)
    _print_report(report)
    return 0 if report.ok else 2


def cmd_import(args) -> int:
    from cmr_bench.data.fetch import import_folder
    from cmr_bench.data.manifest import find_manifest

    root = root_of(args)
    report = import_folder(find_manifest(args.name, root), root, Path(args.path), link=args.link)
    _print_report(report)
    return 0 if report.ok else 2
