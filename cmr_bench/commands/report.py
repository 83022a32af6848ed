"""`cmr-bench report`: report.html (self-contained) and report.md from stored runs and the
figures already in the output folder."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 37


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP, OUT_FOLDER, RESULTS_HELP

    p = sub.add_parser("report", help="report.html (one self-contained page: tables, figures, environment, deviations) "
                                      "and report.md from stored runs")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP)
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"folder of the report; the figures `plot` wrote (PNG) and table files in it are included "
                        f"(default <results-dir>/{OUT_FOLDER}/<dataset>/, where `table` and `plot` write)")
    p.add_argument("--figures", default="embed", choices=("embed", "link"),
                   help="embed: PNGs inside the page, one file to send (default); link: the page points at the "
                        "PNGs beside it, a small page to commit")
    p.add_argument("--name", default="report", metavar="STEM", help="file name of the page and its twin (default report)")
    from cmr_bench.commands._common import add_reference_args

    add_reference_args(p)
    p.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from cmr_bench.commands._common import dataset_name, reference_of, root_of, user_output
    from cmr_bench.report.page import write_report

    dataset = dataset_name(args)
    out = Path(args.out) if args.out else user_output(args, dataset)
    if out.exists() and not out.is_dir():
        raise CmrBenchError(f"--out {out} exists and is not a folder (--out names the folder the report goes into)")
    written = write_report(Path(args.results_dir), dataset, out, root=root_of(args), name=args.name, figures=args.figures,
                           reference=reference_of(args))
    for path in written:
        print(f"wrote {path}")
    print(f"open {written[0].resolve().as_uri()} in a browser")
    return 0
