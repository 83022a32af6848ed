"""`cmr-bench archive`: the compact archive of a store's finished runs that `table`, `compare`,
`plot` and `report` use as reference rows (see runner/archive.py)."""

from __future__ import annotations

from pathlib import Path

ORDER = 38


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP, RESULTS_HELP
    from cmr_bench.report.results import DEFAULT_REFERENCE

    p = sub.add_parser("archive", help="archive a store's finished runs (per-query AP, metrics, config, commit; no codes) "
                                       "as the reference runs tables compare new methods with")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP + " to archive")
    p.add_argument("--out", default=str(DEFAULT_REFERENCE), metavar="DIR",
                   help=f"archive folder; <DIR>/<dataset>/ is replaced (default {DEFAULT_REFERENCE})")
    p.add_argument("--float32", action="store_true",
                   help="store per-query AP as float32 (about 40%% smaller; differs from the runs' values by < 1e-7 relative); "
                        "default float64, bit-identical to the runs")
    p.set_defaults(handler=cmd_archive)


def cmd_archive(args) -> int:
    from cmr_bench.commands._common import dataset_name
    from cmr_bench.runner.archive import build_archive

    dataset = dataset_name(args)
    folder, index = build_archive(Path(args.results_dir), dataset, Path(args.out), float32=args.float32)
    size = sum(meta["bytes"] for meta in index["files"].values())
    commits = ", ".join(f"{c[:12]} ({n} runs)" for c, n in sorted(index["commits"].items()))
    print(f"archived {index['runs']} runs of '{dataset}' (data {index['data']}) into {folder}: "
          f"{size / 1e6:.2f} MB, {size / index['runs'] / 1e3:.1f} kB per run")
    print(f"commits: {commits}" + ("" if index["clean"] else
                                   "  warning: not one clean commit; regenerate the runs at a committed checkout before committing the archive"))
    return 0
