"""`cmr-bench table`: regenerate the paper's tables from stored runs."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 30
FORMATS = ("csv", "latex", "md")


def register(sub) -> None:
    p = sub.add_parser("table", help="Tables II-V of the SDCMR paper (and the hashing tables) from stored runs")
    from cmr_bench.commands._common import DATASET_HELP, OUT_FOLDER, RESULTS_HELP

    p.add_argument("--table", required=True, choices=["2", "3", "4", "5", "hash", "djsrh-ablation"],
                   help="2-5: the SDCMR paper's Tables II-V; hash: hashing methods by code length; djsrh-ablation: DJSRH-1..6")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--metric", default=None, help="map@all (default) or map@50 (DJSRH's tables)")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP)
    p.add_argument("--format", default="csv,latex,md", help="comma list of csv, latex, md (default all three)")
    p.add_argument("--out", default=None, help=f"output folder (default <results-dir>/{OUT_FOLDER}/<dataset>/)")
    p.add_argument("--include-overrides", action="store_true",
                   help="also runs made with --set: one row per distinct configuration, marked {key=value}")
    p.add_argument("--hide-missing", action="store_true", help="leave out rows without a run of ours (no plugin, not run)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="only these rows, in this order (plugin names such as cca,sdcmr or row labels; a name brings its tuned rows)")
    p.add_argument("--columns", default="", metavar="ci,n,paper,same-features",
                   help="LaTeX: extra columns beside the paper's Img2Txt | Txt2Img | Avg (95%% CIs, runs per entry, the "
                        "published numbers and their difference, the same-features reference); CSV and Markdown hold them all")
    from cmr_bench.commands._common import add_reference_args

    add_reference_args(p)
    p.set_defaults(handler=cmd_table)


def cmd_table(args) -> int:
    from cmr_bench.report.tables import LATEX_COLUMNS, hash_table, paper_table, select_rows, to_markdown, write_table

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise CmrBenchError(f"--format: unknown {', '.join(bad) or 'nothing'} (choose from {', '.join(FORMATS)})")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    for c in columns:
        if c not in LATEX_COLUMNS:
            from cmr_bench.errors import UnknownNameError

            raise UnknownNameError("--columns entry", c, LATEX_COLUMNS)
    metric = args.metric or "map@all"
    if metric not in ("map@all", "map@50"):
        raise CmrBenchError(f"--metric must be map@all or map@50, got '{metric}'")
    from cmr_bench.commands._common import dataset_name, reference_of, root_of, user_output

    dataset = dataset_name(args)
    runs_dir = Path(args.results_dir)
    extra = {"include_overrides": args.include_overrides, "hide_missing": args.hide_missing, "reference": reference_of(args)}
    if args.table == "hash":
        table = hash_table(dataset, runs_dir, metric, **extra)
    elif args.table == "djsrh-ablation":
        table = hash_table(dataset, runs_dir, metric, variants=True, **extra)
    else:
        table = paper_table(args.table, dataset, runs_dir, metric, root=root_of(args), **extra)
    if args.methods is not None:
        wanted = [m for m in args.methods.split(",") if m.strip()]
        if not wanted:
            raise CmrBenchError("--methods: name at least one row (e.g. --methods cca,sdcmr)")
        table = select_rows(table, wanted)
    out = Path(args.out) if args.out else user_output(args, dataset)
    if out.exists() and not out.is_dir():
        raise CmrBenchError(f"--out {out} exists and is not a folder (--out names the folder the tables go into)")
    try:
        paths = write_table(table, out, formats, columns)
    except OSError as exc:
        raise CmrBenchError(f"cannot write tables into {out}: {exc.strerror or exc}") from None
    print(to_markdown(table))
    for p in paths:
        print(f"wrote {p}")
    print(f"output: {out}")
    return 0
