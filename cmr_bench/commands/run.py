"""`cmr-bench run`: train, encode, evaluate and store a grid of runs."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.commands._common import root_of
from cmr_bench.errors import CmrBenchError
from cmr_bench.runner.spec import CONFIG_SOURCES

ORDER = 20
DEFAULT_RESULTS = Path("results") / "runs"


# the CLI's value parsers live in the library (experiment files use them too)
from cmr_bench.runner.values import MAX_BITS, MAX_VALUES, int_list, non_negative_float, positive_int  # noqa: E402,F401


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
    p.add_argument("--config", default="default", metavar="default|tuned",
                   help="default: each method's published config; tuned: the best config `cmr-bench tune` wrote "
                        "(<tuned-dir>/<dataset>/<method>.toml; a method without one is an error)")
    p.add_argument("--tuned-dir", default=None, metavar="DIR", help="where tuned configs are read with --config tuned (default results/tuned)")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="run store (default results/runs)")
    p.add_argument("--force", action="store_true", help="rerun finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the grid and what would run")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="force progress bars")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="plain log lines")
    p.add_argument("--threads", default="1", metavar="T",
                   help="torch threads per run (default 1, whatever --jobs is: results do not depend on --jobs; "
                        "another count is part of the run's identity, since it changes the arithmetic)")
    p.add_argument("--jobs", default=None, metavar="N|auto",
                   help="local: N worker processes, one run each (1: in this process); default auto ($CMR_BENCH_JOBS "
                        "when set): one per usable core, bounded by free memory and each method's measured peak; "
                        "results do not depend on it; "
                        "ray: at most N tasks in flight (default: as many as the cluster's CPUs/GPUs allow), "
                        "and a local instance gets N x --ray-cpus CPUs")
    p.add_argument("--executor", default="local", metavar="local|ray", help="local (default) or ray: every run a Ray task")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to use (e.g. auto, HOST:6379, ray://HOST:10001); default: a local instance on 127.0.0.1")
    p.add_argument("--ray-cpus", default="1", metavar="C", help="CPUs declared per Ray task (default 1; also its torch threads)")
    p.add_argument("--ray-gpus", default=None, metavar="G", help="GPUs declared per Ray task (default 1 with --device cuda, else 0)")
    add_limit_args(p)
    p.set_defaults(handler=cmd_run)


def add_limit_args(p) -> None:
    """--max-runs and --run-timeout, shared by `run` and `reproduce`."""
    from cmr_bench.runner.grid import MAX_RUNS

    p.add_argument("--max-runs", default=None, metavar="N",
                   help=f"refuse a grid of more than N runs, counted before it is expanded (default {MAX_RUNS:,})")
    p.add_argument("--run-timeout", default=None, metavar="SECONDS",
                   help="a run still going after SECONDS is stopped and stored as failed with that reason "
                        "(local executor; default: no limit)")


EXECUTORS = ("local", "ray")
# A fixed cap, not one from this machine's cores: --threads is part of a run's identity, so an
# experiment must mean the same everywhere. 100,000 made OpenMP fail allocating thread stacks.
MAX_THREADS = 1024
DEVICES = ("auto", "cpu", "cuda")


def executor_options(args):
    """Validate --jobs/--executor/--ray-* (one-line errors) into ExecutorOptions."""
    from cmr_bench.runner.grid import ExecutorOptions

    if args.executor not in EXECUTORS:
        raise CmrBenchError(f"--executor: unknown '{args.executor}' (choose from {', '.join(EXECUTORS)})")
    from cmr_bench.runner.capacity import jobs_default, parse_jobs

    ray = args.executor == "ray"
    # local: None is auto, settled per grid from the cores, the free memory and the runs'
    # peaks (runner/capacity.py); ray: None leaves it to the cluster
    jobs = parse_jobs(args.jobs) if args.jobs is not None else (None if ray else parse_jobs(jobs_default(), "$CMR_BENCH_JOBS"))
    threads = positive_int(args.threads, "--threads")
    if threads > MAX_THREADS:
        raise CmrBenchError(f"--threads: at most {MAX_THREADS}, got {threads} (torch threads per run; more only thrash)")
    timeout = getattr(args, "run_timeout", None)
    timeout = non_negative_float(timeout, "--run-timeout", positive=True) if timeout is not None else None
    if ray and timeout is not None:
        raise CmrBenchError("--run-timeout applies to the local executor only (Ray tasks: use the cluster's limits)")
    if not ray:
        given = [flag for flag, value in (("--ray-address", args.ray_address), ("--ray-gpus", args.ray_gpus)) if value is not None]
        if args.ray_cpus != "1":
            given.append("--ray-cpus")
        if given:
            raise CmrBenchError(f"{', '.join(given)} only applies with --executor ray")
        return ExecutorOptions(jobs=jobs, threads=threads, run_timeout=timeout)
    if args.ray_address is not None and not str(args.ray_address).strip():
        raise CmrBenchError("--ray-address: empty address")
    from cmr_bench.runner.ray_executor import import_ray

    import_ray(local=not args.ray_address)  # fail early, before anything runs, when the extra is not installed
    cpus = non_negative_float(args.ray_cpus, "--ray-cpus", positive=True)
    default_gpus = 1.0 if str(args.device).startswith("cuda") else 0.0
    gpus = non_negative_float(args.ray_gpus, "--ray-gpus") if args.ray_gpus is not None else default_gpus
    return ExecutorOptions(jobs=jobs, executor="ray", ray_address=args.ray_address, ray_cpus=cpus, ray_gpus=gpus, threads=threads)


def max_runs(args) -> int | None:
    value = getattr(args, "max_runs", None)
    return positive_int(value, "--max-runs") if value is not None else None


def check_device_name(device: str) -> str:
    import re

    if device in DEVICES or re.fullmatch(r"cuda:\d+", device):
        return device
    raise CmrBenchError(f"unknown device '{device}' (auto, cpu or cuda)")


def check_results_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise CmrBenchError(f"--results-dir {path} exists and is not a folder")
    return path


def load_for_run(name: str, root):
    """The dataset, with any unexpected failure of the data layer as one line (exit 2)."""
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.errors import DataError

    try:
        return load_dataset(name, root)
    except CmrBenchError:
        raise
    except (MemoryError, RecursionError, Exception) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"dataset '{name}' could not be loaded: {type(exc).__name__}: {first}") from None


def dry_run(specs, dataset, device: str, runs_dir: Path, options, force: bool) -> int:
    """The grid, each run's state, and how long the pending runs should take."""
    from cmr_bench.runner.estimate import grid_estimate, train_items
    from cmr_bench.runner.store import read_status

    pending = []
    for spec in specs:
        state = read_status(spec.folder(runs_dir)) or "pending"
        if state != "done" or force:
            pending.append(spec)
        print(f"{state:8s} {spec.dataset}/{spec.protocol} {spec.label}  config {spec.config_hash}  -> {spec.folder(runs_dir)}")
    from cmr_bench.runner.grid import settle_jobs

    chosen = settle_jobs(options, pending, dataset, device) if pending else None
    jobs = min(options.jobs or 1, max(1, len(pending)))
    where = f"Ray ({options.ray_address or 'local instance'})" if options.executor == "ray" else (
        f"{jobs} local processes" if jobs > 1 else "this process")
    print(f"{len(specs)} runs on {device}, in {where}, {options.threads} torch thread(s) each"
          + (f" ({chosen})" if chosen else ""))
    train = train_items(dataset, pending)
    seconds, unknown = grid_estimate(pending, train, workers=jobs)
    if pending:
        from cmr_bench.runner.display import _duration

        note = f" (no figure for {', '.join(unknown)})" if unknown else ""
        print(f"estimate: about {_duration(seconds)} for the {len(pending)} run(s) to do on an idle 2-core CPU{note}; "
              "cmr_bench/runner/estimate.py holds the per-method figures")
    return 0


def cmd_run(args) -> int:
    from cmr_bench.registry import resolve_methods
    from cmr_bench.runner.grid import expand, parse_overrides, run_grid
    from cmr_bench.seeding import resolve_device

    seeds = int_list(args.seeds, "--seeds")
    bits = int_list(args.bits, "--bits", minimum=1)
    # user errors before the grid, not failed runs: torch seeds are 64-bit, codes beyond 4096 bits are absurd
    if max(seeds) >= 2**63:
        raise CmrBenchError(f"--seeds: values must be below 2**63, got {max(seeds)}")
    if max(bits) > MAX_BITS:
        raise CmrBenchError(f"--bits: at most {MAX_BITS}, got {max(bits)}")
    if args.config not in CONFIG_SOURCES:
        raise CmrBenchError(f"--config: unknown '{args.config}' (default or tuned)")
    if args.tuned_dir is not None and args.config != "tuned":
        raise CmrBenchError("--tuned-dir only applies with --config tuned")
    options = executor_options(args)
    runs_dir = check_results_dir(Path(args.results_dir))
    methods = resolve_methods(args.methods)
    check_device_name(args.device)
    # Ray resolves the device on each worker (a driver without a GPU may drive GPU tasks).
    device = args.device if options.executor == "ray" else resolve_device(args.device)
    root = root_of(args)
    dataset = load_for_run(args.dataset, root)
    options.dataset_source = ("load", str(args.dataset), str(root))
    specs = expand(methods, dataset, seeds, args.protocol, bits, args.variants, parse_overrides(args.overrides),
                   config_source=args.config, tuned_dir=args.tuned_dir, max_runs=max_runs(args))
    if options.threads != 1:
        from dataclasses import replace

        specs = [replace(spec, threads=options.threads) for spec in specs]
    if args.dry_run:
        return dry_run(specs, dataset, device, runs_dir, options, args.force)
    result = run_grid(specs, dataset, device, runs_dir, force=args.force, progress=args.progress, options=options)
    from cmr_bench.report.summary import summary_rows

    rows = summary_rows(runs_dir, specs)
    if rows:
        from tabulate import tabulate

        for protocol in dict.fromkeys(r["protocol"] for r in rows):  # one table per protocol
            mine = [{k: v for k, v in r.items() if k != "protocol"} for r in rows if r["protocol"] == protocol]
            print(f"\nprotocol '{protocol}'" + (f": {dataset.protocols[protocol].description}" if protocol in dataset.protocols else ""))
            print(tabulate(mine, headers="keys", tablefmt="simple"))
    if result.elsewhere:
        print(f"{len(result.elsewhere)} run(s) were finished by another invocation", flush=True)
    print(f"runs stored in {runs_dir}", flush=True)
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see run.json in their folders", flush=True)
        return 1
    return 0
