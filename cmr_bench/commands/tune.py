"""`cmr-bench tune`: each method's search space, the same trial budget, scored on validation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 25


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP

    p = sub.add_parser("tune", help="tune hyperparameters on a validation split carved from train (Optuna; needs the tune extra)")
    p.add_argument("--methods", required=True, help="comma list or 'all' (all: the methods that declare a search space)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--trials", type=int, required=True, help="trials per method (a grid space runs at most its grid)")
    p.add_argument("--jobs", default=None, metavar="N|auto",
                   help="trials run at once, in threads; default auto ($CMR_BENCH_JOBS when set): one per usable core, "
                        "bounded by free memory and the method's measured peak")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///<out>/<dataset>/studies.db; any SQLAlchemy URL)")
    p.add_argument("--bits", type=int, default=None, help="code length to tune binary methods at (1-4096; binary methods only)")
    p.add_argument("--seed", type=int, default=0, help="sampler, validation split and training seed (0 to 2**63-1; default 0)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train carved for validation (default 0.1)")
    p.add_argument("--out", default=str(Path("results") / "tuned"), help="folder for <dataset>/<method>.toml (default results/tuned)")
    p.set_defaults(handler=cmd_tune)


def cmd_tune(args) -> int:
    from cmr_bench.commands._common import root_of
    from cmr_bench.runner.tuned import write_tuned
    from cmr_bench.tuning import need_optuna, search_space, tune_method

    if args.trials < 1:
        raise CmrBenchError(f"--trials must be >= 1, got {args.trials}")
    from cmr_bench.runner.capacity import jobs_default, parse_jobs

    jobs_given = parse_jobs(args.jobs) if args.jobs is not None else parse_jobs(jobs_default(), "$CMR_BENCH_JOBS")
    if not 0 < args.val_fraction < 1:
        raise CmrBenchError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    from cmr_bench.runner.values import bits_value, seed_value

    seed_value(args.seed, "--seed")
    if args.bits is not None:
        bits_value(args.bits, "--bits")
    need_optuna()
    from cmr_bench.registry import all_methods, resolve_methods

    if args.methods.strip().lower() == "all":
        names = [n for n, c in all_methods().items() if c.in_all and c.search_space]
        if not names:
            raise CmrBenchError("no method declares a search space (a `search_space` dict next to its defaults)")
    else:
        names = resolve_methods(args.methods)
    for n in names:  # every space (and code length) checked before the first trial
        search_space(all_methods()[n])
        if all_methods()[n].code_type == "binary" and args.bits is None:
            raise CmrBenchError(f"method '{n}' makes binary codes: give the code length to tune at with --bits")
        if all_methods()[n].code_type != "binary" and args.bits is not None:
            raise CmrBenchError(f"--bits {args.bits}: method '{n}' makes real-valued codes (no code length); tune it without --bits")
    from cmr_bench.data.loader import load_dataset

    # train_only: the test split's files are never opened while tuning (tests/test_tuning.py proves it)
    dataset = load_dataset(args.dataset, root_of(args), train_only=True)
    from cmr_bench.tuning import check_validation_split

    for n in names:  # a validation split and a training part that both hold items, before anything is written
        check_validation_split(all_methods()[n], dataset, args.val_fraction, args.seed)
    out = Path(args.out)
    storage = args.storage
    if storage is not None:
        check_storage_query(storage)
    if storage is None:
        from cmr_bench.safe_io import check_regular, make_folder

        db = make_folder(out / dataset.name, "tuned-config folder", base=out) / "studies.db"
        if os.path.lexists(db):  # a planted (even dangling) link must not make SQLite create a file elsewhere
            check_regular(db, "study database", max_bytes=2**40)
        else:  # created here, exclusively: SQLite then opens our own empty file
            try:
                os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            except FileExistsError:
                check_regular(db, "study database", max_bytes=2**40)
            except OSError as exc:
                raise CmrBenchError(f"cannot create {db}: {exc.strerror or exc}") from None
        storage = f"sqlite:///{db.absolute()}"
        own_datasets_only(storage, dataset.name)
    for n in names:
        jobs = trial_jobs(n, args.trials, dataset, jobs_given)
        try:
            res = tune_method(n, dataset, args.trials, storage, seed=args.seed, jobs=jobs, bits=args.bits,
                              val_fraction=args.val_fraction, progress=sys.stdout.isatty())  # a bar on a TTY, quiet off one
        except KeyboardInterrupt:
            print(f"cmr-bench: interrupted while tuning {n}; its finished trials are kept in {storage}: "
                  "the same command resumes it", file=sys.stderr)
            return 130
        path = write_tuned(res, out)
        picked = ", ".join(f"{k}={res['config'][k]}" for k in res["tuned"])
        print(f"{n}: best validation {res['value']:.4f} after {res['trials']} trials ({res['sampler']}, "
              f"{res['seconds']} s): {picked} -> {path}")
    return 0


def own_datasets_only(storage: str, dataset: str) -> None:
    """The default study file lives in <out>/<dataset>/: studies of another dataset in it mean
    the file was copied or moved there (an explicit --storage may hold many datasets' studies:
    their names start with the dataset's)."""
    from cmr_bench.tuning import need_optuna

    optuna = need_optuna()
    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # corrupt file, another schema
        raise CmrBenchError(f"study storage {storage}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unusable'}") from None
    other = sorted(n for n in names if not n.startswith(dataset + "/"))
    if other:
        raise CmrBenchError(f"study storage {storage} holds studies of another dataset ({other[0]}); "
                            f"it belongs to that dataset's folder, not '{dataset}' (or pass --storage)")


def trial_jobs(method: str, trials: int, dataset, given: int | None) -> int:
    """Trials at once for one method's study: --jobs N, or auto (one per usable core, bounded by
    free memory and the method's peak). Trials run in threads of this process, so the usable
    cores are split between them rather than given to each (oversubscription on a small machine)."""
    from types import SimpleNamespace

    import torch

    from cmr_bench.runner.capacity import choose_jobs, data_bytes
    from cmr_bench.runner.executors import threads_per_job

    if given is None:
        choice = choose_jobs([SimpleNamespace(method=method)] * max(1, trials), data_bytes(dataset), "cpu")
        jobs = choice.jobs
        print(f"{method}: {choice.describe()}", flush=True)
    else:
        jobs = given
    torch.set_num_threads(threads_per_job(jobs))
    return jobs


# What SQLAlchemy's SQLite dialect honours in a URL's query; it warns about anything else and
# ignores it, so a user's `?mode=ro` or typo would silently not apply: refused instead.
SQLITE_QUERY_KEYS = ("timeout",)


def check_storage_query(storage: str) -> None:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(storage)
    if not parts.scheme.lower().startswith("sqlite") or not parts.query:
        return  # other databases pass their query to the driver, which honours or refuses it
    keys = sorted(set(parse_qs(parts.query, keep_blank_values=True)) - set(SQLITE_QUERY_KEYS)) or \
        ([] if parse_qs(parts.query, keep_blank_values=True) else [parts.query])
    if keys:
        raise CmrBenchError(f"--storage: SQLite ignores '{keys[0]}' in the URL's query (it honours only "
                            f"{', '.join(SQLITE_QUERY_KEYS)}); drop it")
