"""`cmr-bench plot pr|precision-at-r|code-length`: PNG figures from stored runs."""

from __future__ import annotations

from pathlib import Path

ORDER = 35


def register(sub) -> None:
    p = sub.add_parser("plot", help="PR curves, precision@top-R curves, mAP vs code length (PNG)")
    p.add_argument("kind", choices=["pr", "precision-at-r", "code-length"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--protocol", default=None, help="only runs of this protocol (default: all)")
    p.add_argument("--bits", type=int, default=None, help="binary methods: only this code length (pr, precision-at-r)")
    p.add_argument("--metric", default="map@all", help="code-length: map@all or map@50")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"))
    p.add_argument("--out", default=None, help="PNG path (default results/<dataset>/fig_<kind>.png)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args) -> int:
    from cmr_bench.report import figures

    suffix = f"_{args.bits}bits" if args.bits else ""
    out = Path(args.out) if args.out else Path("results") / args.dataset / f"fig_{args.kind.replace('-', '_')}{suffix}.png"
    runs_dir = Path(args.results_dir)
    if args.kind == "pr":
        path = figures.plot_pr(runs_dir, args.dataset, out, args.protocol, args.bits)
    elif args.kind == "precision-at-r":
        path = figures.plot_precision_at_r(runs_dir, args.dataset, out, args.protocol, args.bits)
    else:
        path = figures.plot_code_length(runs_dir, args.dataset, out, args.protocol, args.metric)
    print(f"wrote {path}")
    return 0
