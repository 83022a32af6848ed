"""`cmr-bench run`: train, encode, evaluate and store a grid of runs."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.commands._common import root_of
from cmr_bench.errors import CmrBenchError

ORDER = 20
DEFAULT_RESULTS = Path("results") / "runs"


def int_list(text: str, what: str, minimum: int = 0) -> list[int]:
    """'0,1,2' or '0-4' -> ints; anything else is a one-line error."""
    out: list[int] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise CmrBenchError(f"{what}: expected integers like 0,1,2 or 0-4, got '{text}'") from None
    if not out:
        raise CmrBenchError(f"{what}: no values given")
    if min(out) < minimum:
        raise CmrBenchError(f"{what}: values must be >= {minimum}, got {min(out)}")
    return list(dict.fromkeys(out))


def register(sub) -> None:
    p = sub.add_parser("run", help="train, encode, evaluate and store runs (finished runs are skipped)")
    p.add_argument("--methods", required=True, help="'all', a comma list, or globs (e.g. 'cca,sd*')")
    p.add_argument("--dataset", required=True, help="dataset name or path to a manifest .toml")
    p.add_argument("--protocol", default=None, help="evaluation protocol (default: 'real' for real-valued, 'hash' for binary methods)")
    p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4 (default 0)")
    p.add_argument("--bits", default="16,32,64,128", help="code lengths for binary methods (default 16,32,64,128)")
    p.add_argument("--variants", default="none", help="ablation variants: none (default), all, or a comma list of names")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter: key=value (every method with that key) or method.key=value")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="run store (default results/runs)")
    p.add_argument("--force", action="store_true", help="rerun finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the grid and what would run")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="force progress bars")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="plain log lines")
    p.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.registry import resolve_methods
    from cmr_bench.runner.grid import expand, parse_overrides, run_grid
    from cmr_bench.runner.store import read_status
    from cmr_bench.seeding import resolve_device

    seeds = int_list(args.seeds, "--seeds")
    bits = int_list(args.bits, "--bits", minimum=1)
    methods = resolve_methods(args.methods)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, root_of(args))
    specs = expand(methods, dataset, seeds, args.protocol, bits, args.variants, parse_overrides(args.overrides))
    runs_dir = Path(args.results_dir)
    if args.dry_run:
        for spec in specs:
            state = read_status(spec.folder(runs_dir)) or "pending"
            print(f"{state:8s} {spec.dataset}/{spec.protocol} {spec.label}  config {spec.config_hash}  -> {spec.folder(runs_dir)}")
        print(f"{len(specs)} runs on {device}")
        return 0
    result = run_grid(specs, dataset, device, runs_dir, force=args.force, progress=args.progress)
    from cmr_bench.report.summary import summary_rows

    rows = summary_rows(runs_dir, specs)
    if rows:
        from tabulate import tabulate

        print(tabulate(rows, headers="keys", tablefmt="simple"))
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see run.json in their folders", flush=True)
        return 1
    return 0
