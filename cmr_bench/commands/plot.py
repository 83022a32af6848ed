"""`cmr-bench plot pr|precision-at-r|code-length|curves|tsne`: figures from stored runs (PNG, or PDF/SVG/EPS by --out's extension)."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 35
KINDS = ("pr", "precision-at-r", "code-length", "curves", "tsne")


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP, OUT_FOLDER, RESULTS_HELP

    p = sub.add_parser("plot", help="PR curves, precision@top-R curves, mAP vs code length, training curves (PNG, PDF, SVG)")
    p.add_argument("kind", choices=KINDS, help="pr | precision-at-r (one figure per protocol and code length), code-length, "
                                               "curves (loss and validation mAP per epoch of RUN folders), tsne (Fig. 6: t-SNE of the test "
                                               "features and of --method's codes)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="curves: run folders (seed-k, or a config folder for all its seeds)")
    p.add_argument("--dataset", default=None, help=DATASET_HELP + "; required except for curves")
    p.add_argument("--protocol", default=None, help="only runs of this protocol (default: every protocol, one figure each)")
    p.add_argument("--bits", type=int, default=None, help="binary methods: only this code length (default: one figure per length)")
    p.add_argument("--config", default="all", metavar="{all,default,tuned}",
                   help="pr, precision-at-r: which runs to draw (default all; tuned runs get curves of their own)")
    p.add_argument("--metric", default="map@all", help="code-length: map@all (default) or map@50")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="pr, precision-at-r, code-length: only these methods (plugin names, or name[variant]), in this legend order")
    p.add_argument("--highlight", type=int, default=None, metavar="K",
                   help="pr: draw the top K methods by mAP solid and thick, the rest thin (default 3 when more than 8 "
                        "curves share a panel, else 0: all alike)")
    p.add_argument("--method", default="sdcmr", help="tsne: the real-valued method whose common representations are shown "
                                                     "(a name or name[variant]; default sdcmr; its lowest-seed finished run)")
    p.add_argument("--term", default=None, help="curves with several runs: the log term to draw (default: 'loss', else the first term)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="curves: also write the runs' logs as TensorBoard event files into DIR (pip install \"cmr-bench[tensorboard]\")")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP)
    from cmr_bench.commands._common import add_reference_args

    add_reference_args(p)  # pr, precision-at-r, code-length; tsne needs codes: your runs alone
    p.add_argument("--out", default=None, metavar="FILE",
                   help=f"figure path; its extension picks the format: .png, .pdf, .svg or .eps (vector) (default "
                        f"<results-dir>/{OUT_FOLDER}/<dataset>/fig_<kind>.png; several figures get _<protocol>[_<bits>bits] added)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args) -> int:
    from cmr_bench.report import figures

    if args.out:
        figures.check_format(Path(args.out))
    if args.kind == "curves":
        return cmd_curves(args)
    methods = _methods(args.methods) if args.methods is not None else None
    if methods is not None and args.kind == "tsne":
        raise CmrBenchError("plot tsne shows one method: use --method NAME, not --methods")
    if args.runs:
        raise CmrBenchError(f"plot {args.kind} takes no RUN folders (only plot curves does); use --dataset")
    if not args.dataset:
        raise CmrBenchError(f"plot {args.kind}: --dataset is required")
    from cmr_bench.commands._common import dataset_name, reference_of, user_output

    dataset = dataset_name(args)
    suffix = f"_{args.bits}bits" if args.bits else ""
    out = Path(args.out) if args.out else user_output(args, dataset) / f"fig_{args.kind.replace('-', '_')}{suffix}.png"
    runs_dir = Path(args.results_dir)
    if args.kind == "pr":
        if args.highlight is not None and args.highlight < 0:
            raise CmrBenchError(f"--highlight {args.highlight}: give a count of 0 or more")
        paths = figures.plot_pr(runs_dir, dataset, out, args.protocol, args.bits, args.config, methods, reference=reference_of(args),
                                highlight=args.highlight)
    elif args.kind == "precision-at-r":
        paths = figures.plot_precision_at_r(runs_dir, dataset, out, args.protocol, args.bits, args.config, methods,
                                            reference=reference_of(args))
    elif args.kind == "tsne":  # Fig. 6; needs scikit-learn (the figures extra)
        from cmr_bench.commands._common import root_of
        from cmr_bench.report.tsne import plot_tsne

        paths = [plot_tsne(runs_dir, dataset, out, args.method, root=root_of(args))]
    else:
        paths = [figures.plot_code_length(runs_dir, dataset, out, args.protocol, args.metric, methods, reference=reference_of(args))]
    for path in paths:
        print(f"wrote {path}")
    print(f"output: {out.parent}")
    return 0


def _methods(text: str) -> list[str]:
    """--methods: known plugin names (or name[variant]), in the order given."""
    from cmr_bench.errors import UnknownNameError
    from cmr_bench.registry import all_methods

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise CmrBenchError("--methods: name at least one method (e.g. --methods cca,sdcmr)")
    known = all_methods()
    for name in names:
        base, _, variant = name.partition("[")
        if base not in known:
            raise UnknownNameError("method", base, known)
        if variant and variant.rstrip("]") not in known[base].variants:
            raise UnknownNameError(f"variant of '{base}'", variant.rstrip("]"), known[base].variants or ["(none)"])
    return list(dict.fromkeys(names))


def cmd_curves(args) -> int:
    from cmr_bench.commands._common import default_output
    from cmr_bench.report import figures

    if not args.runs:
        raise CmrBenchError("plot curves: name one or more run folders (e.g. results/runs/wiki/real/acmr/default-<hash>/seed-0)")
    if args.methods is not None:
        raise CmrBenchError("plot curves draws the RUN folders it is given: --methods does not apply")
    runs = figures.read_logs([Path(r) for r in args.runs])
    if args.out:
        out = Path(args.out)
    else:  # where every table and figure goes: <results-dir>/_out/<dataset>/ (the runs' dataset)
        datasets = sorted({r["dataset"] for r in runs})
        out = default_output(args.results_dir, datasets[0] if len(datasets) == 1 else "mixed") / f"curves_{figures.runs_slug(runs)}.png"
    path = figures.plot_curves(runs, out, term=args.term)
    print(f"wrote {path}")
    if args.tensorboard:
        for where in figures.write_tensorboard(runs, Path(args.tensorboard)):
            print(f"wrote {where}")
        print(f"tensorboard --logdir {args.tensorboard}")
    print(f"output: {out.parent}")
    return 0
