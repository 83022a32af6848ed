"""`cmr-bench table`: regenerate the paper's tables from stored runs."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 30
FORMATS = ("csv", "latex", "md")


def register(sub) -> None:
    p = sub.add_parser("table", help="Tables II-V of the SDCMR paper (and the hashing tables) from stored runs")
    p.add_argument("--table", required=True, choices=["2", "3", "4", "5", "hash", "djsrh-ablation"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--metric", default=None, help="map@all (default) or map@50 (DJSRH's tables)")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"))
    p.add_argument("--format", default="csv,latex,md", help="comma list of csv, latex, md")
    p.add_argument("--out", default=None, help="output folder (default results/<dataset>/)")
    p.set_defaults(handler=cmd_table)


def cmd_table(args) -> int:
    from cmr_bench.report.tables import hash_table, paper_table, to_markdown, write_table

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise CmrBenchError(f"--format: unknown {', '.join(bad) or 'nothing'} (choose from {', '.join(FORMATS)})")
    metric = args.metric or "map@all"
    if metric not in ("map@all", "map@50"):
        raise CmrBenchError(f"--metric must be map@all or map@50, got '{metric}'")
    runs_dir = Path(args.results_dir)
    if args.table == "hash":
        table = hash_table(args.dataset, runs_dir, metric)
    elif args.table == "djsrh-ablation":
        table = hash_table(args.dataset, runs_dir, metric, variants=True)
    else:
        from cmr_bench.commands._common import root_of

        table = paper_table(args.table, args.dataset, runs_dir, metric, root=root_of(args))
    out = Path(args.out) if args.out else Path("results") / args.dataset
    if out.exists() and not out.is_dir():
        raise CmrBenchError(f"--out {out} exists and is not a folder (--out names the folder the tables go into)")
    try:
        paths = write_table(table, out, formats)
    except OSError as exc:
        raise CmrBenchError(f"cannot write tables into {out}: {exc.strerror or exc}") from None
    print(to_markdown(table))
    for p in paths:
        print(f"wrote {p}")
    return 0
