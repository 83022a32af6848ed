"""`cmr-bench reproduce EXPERIMENT --dataset D`: run what an experiment file declares and is
not stored yet (resuming like `run`), then write its tables, figures and the report."""

from __future__ import annotations

import time
from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 25


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP, OUT_FOLDER, RESULTS_HELP
    from cmr_bench.commands.run import add_limit_args

    p = sub.add_parser("reproduce", help="run an experiment file's missing runs, then write its tables, figures and report",
                       description="EXPERIMENT is a built-in name (cmr-bench reproduce --list) or a path to a .toml file "
                                   "(format: docs/experiments.md).")
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT", help="built-in experiment name or path to an experiment .toml")
    p.add_argument("--list", action="store_true", help="list the built-in experiments and exit")
    p.add_argument("--dataset", default=None, help=DATASET_HELP + " (default: the experiment's own `dataset`)")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP)
    p.add_argument("--out", default=None, metavar="DIR", help=f"folder for tables, figures and the report "
                                                              f"(default <results-dir>/{OUT_FOLDER}/<dataset>/)")
    p.add_argument("--figures", default="embed", choices=("embed", "link"),
                   help="the report's figures: embedded in the page (default) or linked to the PNGs beside it")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs stored as failed (default: keep them; they show as failed)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (state, folder), the time estimate and the outputs; run nothing")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--jobs", default=None, metavar="N|auto",
                   help="as for `run`: N local worker processes (or Ray tasks in flight); default auto: one per usable core, "
                        "bounded by free memory")
    p.add_argument("--executor", default="local", metavar="local|ray", help="local (default) or ray")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="as for `run`")
    p.add_argument("--ray-cpus", default="1", metavar="C", help="as for `run`")
    p.add_argument("--ray-gpus", default=None, metavar="G", help="as for `run`")
    p.add_argument("--tuned-dir", default=None, metavar="DIR", help="where grids with config = \"tuned\" read their configs (as `run --tuned-dir`)")
    p.add_argument("--threads", default="1", metavar="T", help="torch threads per run, as for `run` (part of a run's identity)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="force progress bars")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="plain log lines")
    add_limit_args(p)
    p.set_defaults(handler=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from cmr_bench.experiment import builtin_experiments, experiment_specs, load_experiment

    if args.list:
        for name, path in builtin_experiments().items():
            exp = load_experiment(str(path))
            print(f"{name:20s} {exp.title}")
        return 0
    if not args.experiment:
        raise CmrBenchError("reproduce: name an experiment (cmr-bench reproduce --list shows the built-in ones) or a .toml path")
    from cmr_bench.commands._common import default_output, root_of
    from cmr_bench.commands.run import check_device_name, check_results_dir, dry_run, executor_options, load_for_run, max_runs

    exp = load_experiment(args.experiment)
    dataset_arg = args.dataset or exp.dataset
    if not dataset_arg:
        raise CmrBenchError(f"reproduce {exp.name}: give --dataset (the experiment names none)")
    options = executor_options(args)
    runs_dir = check_results_dir(Path(args.results_dir))
    check_device_name(args.device)
    root = root_of(args)
    dataset = load_for_run(dataset_arg, root)
    options.dataset_source = ("load", str(dataset_arg), str(root))
    specs = experiment_specs(exp, dataset, runs_dir, tuned_dir=args.tuned_dir, max_runs=max_runs(args))
    if options.threads != 1:
        from dataclasses import replace

        specs = [replace(spec, threads=options.threads) for spec in specs]
    out = Path(args.out) if args.out else default_output(runs_dir, dataset.name)
    if out.exists() and not out.is_dir():
        raise CmrBenchError(f"--out {out} exists and is not a folder (--out names the folder the outputs go into)")
    outputs = planned_outputs(exp)
    if args.dry_run:
        from cmr_bench.seeding import resolve_device

        device = args.device if options.executor == "ray" else resolve_device(args.device)
        if specs:
            dry_run(specs, dataset, device, runs_dir, options, force=False)
        print(f"experiment {exp.name} ({exp.path}): {len(specs)} runs in {len(exp.grids)} grid(s) and {len(exp.sweeps)} sweep(s)")
        print(f"would write into {out}: " + ", ".join(label for label, _ in outputs) + f", {exp.report}.html, {exp.report}.md")
        return 0
    code = 0
    if specs:
        code = _run(specs, dataset, args, options, runs_dir)
    t0 = time.perf_counter()
    failed = write_outputs(exp, dataset.name, runs_dir, out, root, figures=args.figures)
    print(f"outputs written in {time.perf_counter() - t0:.1f}s: {out}")
    if failed:
        print(f"{len(failed)} output(s) not written: {', '.join(failed)}")
        code = code or 1
    return code


def _run(specs, dataset, args, options, runs_dir: Path) -> int:
    from cmr_bench.runner.grid import run_grid
    from cmr_bench.runner.store import validate_run
    from cmr_bench.seeding import resolve_device

    states = [validate_run(spec.folder(runs_dir)).status for spec in specs]
    # A stored failure is kept (a diverging configuration fails again): a second reproduce must
    # run nothing. --retry-failed reruns them.
    failed_before = [spec for spec, state in zip(specs, states) if state == "failed"]
    todo = [spec for spec, state in zip(specs, states) if state not in ("done", "failed")]
    if args.retry_failed:
        todo += failed_before
    elif failed_before:
        print(f"{len(failed_before)} run(s) stored as failed are not retried (--retry-failed reruns them)", flush=True)
    if not todo:
        print(f"nothing to run: all {len(specs)} runs are stored in {runs_dir}", flush=True)
        return 0
    device = args.device if options.executor == "ray" else resolve_device(args.device)
    t0 = time.perf_counter()
    result = run_grid(todo, dataset, device, runs_dir, progress=args.progress, options=options)
    from cmr_bench.runner.display import _duration

    print(f"{len(result.ran)} run(s) made in {_duration(time.perf_counter() - t0)}; runs stored in {runs_dir}", flush=True)
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see run.json in their folders (the outputs leave them out)", flush=True)
        return 1
    return 0


# --- outputs ---------------------------------------------------------------------------------

def _figure_file(kind: str, options: dict) -> str:
    """The file `plot` would write by default (fig_<kind>[_<bits>bits].png); sweeps: fig_<sweep>.png."""
    if "name" in options:
        return options["name"] + ".png"
    if kind == "sweep":
        return f"fig_{options['sweep']}.png"
    suffix = f"_{options['bits']}bits" if options.get("bits") else ""
    return f"fig_{kind.replace('-', '_')}{suffix}.png"


def planned_outputs(exp) -> list[tuple[str, object]]:
    """[(label, output)] in the experiment's order: tables, then figures."""
    out = []
    for t in exp.tables:
        label = f"table {t.kind}" + (f" ({t.options['metric']})" if t.options["metric"] != "map@all" else "")
        out.append((label, t))
    for f in exp.figures:
        out.append((f"{_figure_file(f.kind, f.options)}", f))
    return out


def write_outputs(exp, dataset: str, runs_dir: Path, out: Path, root, figures: str = "embed") -> list[str]:
    """Every table and figure, then the report. An output that cannot be made (no runs for it,
    a missing optional package) is reported and skipped; the others are still written."""
    failed: list[str] = []
    report = {"name": exp.name, "title": exp.title, "description": exp.description, "tables": [], "figures": [],
              "table_files": []}
    for t in exp.tables:
        try:
            paths = write_table_output(t, dataset, runs_dir, out, root)
        except CmrBenchError as exc:
            failed.append(f"table {t.kind}")
            print(f"not written: table {t.kind}: {exc}")
            continue
        report["tables"].append({"table": t.kind, "metric": t.options["metric"]})
        for p in paths:
            report["table_files"].append(p.name)
            print(f"wrote {p}")
    for f in exp.figures:
        target = out / _figure_file(f.kind, f.options)
        try:
            paths = write_figure_output(exp, f, dataset, runs_dir, target, root)
        except CmrBenchError as exc:
            failed.append(target.name)
            print(f"not written: {target.name}: {exc}")
            continue
        if paths is None:
            continue
        for p in paths:
            report["figures"].append({"file": p.name, **({"caption": f.options["caption"]} if "caption" in f.options else {})})
            print(f"wrote {p}")
    try:
        from cmr_bench.report.page import write_report
    except ImportError:
        print("skipped the report: this version has no report writer (cmr_bench.report.page)")
        return failed
    try:
        for p in write_report(runs_dir, dataset, out, root=root, experiment=report, name=exp.report, figures=figures):
            print(f"wrote {p}")
    except CmrBenchError as exc:
        failed.append("report")
        print(f"not written: report: {exc}")
    return failed


def write_table_output(t, dataset: str, runs_dir: Path, out: Path, root) -> list[Path]:
    from cmr_bench.report.tables import hash_table, paper_table, write_table

    metric, extra = t.options["metric"], {"hide_missing": t.options["hide_missing"]}
    if t.kind == "hash":
        table = hash_table(dataset, runs_dir, metric, **extra)
    elif t.kind == "djsrh-ablation":
        table = hash_table(dataset, runs_dir, metric, variants=True, **extra)
    else:
        table = paper_table(t.kind, dataset, runs_dir, metric, root=root, **extra)
    if "name" in t.options:
        table.name = t.options["name"]
    try:
        return write_table(table, out, ["csv", "latex", "md"])
    except OSError as exc:
        raise CmrBenchError(f"cannot write into {out}: {exc.strerror or exc}") from None


def write_figure_output(exp, f, dataset: str, runs_dir: Path, target: Path, root) -> list[Path] | None:
    """The written paths, or None when the figure was skipped (its module is not there)."""
    from cmr_bench.report import figures

    o = f.options
    if f.kind == "pr":
        return figures.plot_pr(runs_dir, dataset, target, o.get("protocol"), o.get("bits"), o.get("config", "all"))
    if f.kind == "precision-at-r":
        return figures.plot_precision_at_r(runs_dir, dataset, target, o.get("protocol"), o.get("bits"), o.get("config", "all"))
    if f.kind == "code-length":
        return [figures.plot_code_length(runs_dir, dataset, target, o.get("protocol"), o.get("metric", "map@all"))]
    if f.kind == "sweep":
        from cmr_bench.report.sweep import plot_sweep

        s = exp.sweep(o["sweep"])
        return [plot_sweep(runs_dir, dataset, target, s.method, s.parameters, s.values, s.seeds, s.variant, s.protocol,
                           s.bits, o.get("metric", "map@all"))]
    if f.kind == "tsne":
        try:
            from cmr_bench.report.tsne import plot_tsne
        except ImportError:
            print(f"skipped {target.name}: this version has no t-SNE figure (cmr_bench.report.tsne)")
            return None
        return [plot_tsne(runs_dir, dataset, target, method=o["method"], root=root)]
    raise CmrBenchError(f"unknown figure '{f.kind}'")
