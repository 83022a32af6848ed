"""Expand --methods/--seeds/--bits/--variants into RunSpecs and run them, skipping finished runs."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmr_bench.data.types import Dataset
from cmr_bench.errors import CmrBenchError
from cmr_bench.registry import get_method
from cmr_bench.runner import store
from cmr_bench.runner.spec import CONFIG_SOURCES, RunSpec
from cmr_bench.runner.store import STATUS_CORRUPT, STATUS_DONE, STATUS_FAILED, validate_run
from cmr_bench.runner.tuned import DEFAULT_TUNED_DIR, TunedConfigMissing, tuned_config, tuned_record
from cmr_bench.runner.threads import run_threads

DEFAULT_PROTOCOL = {"real": "real", "binary": "hash"}
DEFAULT_BITS = (16, 32, 64, 128)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any] | Any]:
    """`key=value` (all methods that have the key) or `method.key=value`; values parsed as
    JSON when they can be (numbers, booleans, lists), else kept as strings."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CmrBenchError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or not all(part.strip() for part in key.split(".", 1)) or "\x00" in item:
            raise CmrBenchError(f"--set expects key=value or method.key=value, got {ascii(item)[:80]}")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw
        out[key] = value
    return out


def _check_targets(methods: list[str], overrides: dict[str, Any]) -> None:
    """`method.key=value` must name a selected method: a typo ('ccaa', 'CCA') is an error
    with suggestions, never silently ignored."""
    from cmr_bench.errors import UnknownNameError

    for key in overrides:
        if "." not in key:
            continue
        target = key.split(".", 1)[0]
        if target in methods:
            continue
        lowered = [m for m in methods if m.lower() == target.lower()]
        if lowered:
            raise CmrBenchError(f"--set {key}: unknown method '{target}'; did you mean {lowered[0]}? (names are lower-case)")
        raise UnknownNameError("method in --set (not one of --methods)", target, methods)


def _overrides_for(method: str, cls, overrides: dict[str, Any]) -> dict[str, Any]:
    """This method's --set values, validated against its declarations (cmr_bench.hparams)."""
    import json

    from cmr_bench.hparams import validate_config

    mine = {}
    for key, value in overrides.items():
        if "." in key:
            target, name = key.split(".", 1)
            if target == method:
                mine[name] = value
        elif key in cls.params:
            mine[key] = value
    for key, value in mine.items():  # --set parses JSON: `--set kernel=1` means the string "1"
        if key in cls.params and cls.params[key].type is str and not isinstance(value, (str, list, dict)):
            mine[key] = json.dumps(value)
    return validate_config(cls, mine, "--set")


MAX_RUNS = 10_000  # a bigger grid is more often a typo (seeds "0-99999") than a plan: --max-runs lifts it


def _variant_names(cls, variants: str) -> list[str]:
    if variants == "none":
        return [""]
    if variants == "all":
        return [""] + list(cls.variants)
    wanted = [v.strip() for v in str(variants).split(",") if v.strip()]
    return [""] + [v for v in dict.fromkeys(wanted) if v in cls.variants]


def count_runs(methods: list[str], seeds: list[int], bits: list[int] | None = None, variants: str = "none") -> int:
    """How many runs expand() would make (methods x variants x code lengths x seeds), without making them."""
    total = 0
    for name in methods:
        cls = get_method(name)
        lengths = len(bits or DEFAULT_BITS) if cls.code_type == "binary" else 1
        total += len(_variant_names(cls, variants)) * lengths * len(seeds)
    return total


def check_grid_size(runs: int, max_runs: int | None, what: str = "the grid") -> None:
    """One line, before anything is expanded, when a grid has more runs than the limit."""
    limit = MAX_RUNS if max_runs is None else max_runs
    if runs > limit:
        raise CmrBenchError(f"{what} has {runs:,} runs, more than the limit of {limit:,}; "
                            f"pass --max-runs {runs} to run them anyway")


def expand(
    methods: list[str], dataset: Dataset, seeds: list[int], protocol: str | None = None,
    bits: list[int] | None = None, variants: str = "none", overrides: dict[str, Any] | None = None,
    config_source: str = "default", tuned_dir: Path | str | None = None, max_runs: int | None = None,
) -> list[RunSpec]:
    """`config_source` "tuned": each method's base config is the one `cmr-bench tune` wrote
    (cmr_bench.runner.tuned.tuned_config; variants and --set apply on top); methods without one are
    named together in one error. More than `max_runs` runs (default MAX_RUNS) is refused first."""
    check_grid_size(count_runs(methods, seeds, bits, variants), max_runs)
    overrides = overrides or {}
    if config_source not in CONFIG_SOURCES:
        raise CmrBenchError(f"--config: unknown '{config_source}' (default or tuned)")
    if config_source == "tuned":
        _check_tuned(methods, dataset, bits, tuned_dir)
    _check_targets(methods, overrides)
    for key in overrides:
        if "." not in key and not any(key in get_method(m).params for m in methods):
            raise CmrBenchError(f"--set {key}: no selected method has a hyperparameter '{key}'")
    if variants not in ("none", "all"):
        wanted = [v.strip() for v in str(variants).split(",") if v.strip()]
        known = {v for m in methods for v in get_method(m).variants}
        unknown = [v for v in wanted if v not in known]
        if unknown or not wanted:
            from cmr_bench.errors import UnknownNameError

            if not wanted:
                raise CmrBenchError("--variants: no names given (none, all, or a comma list)")
            raise UnknownNameError("variant of the selected methods", unknown[0], known or ["(these methods have no variants)"])
    specs = []
    for name in methods:
        cls = get_method(name)
        proto = protocol or DEFAULT_PROTOCOL[cls.code_type]
        if proto not in dataset.protocols:
            raise CmrBenchError(
                f"dataset '{dataset.name}' has no protocol '{proto}' (has: {', '.join(dataset.protocols)}) for method '{name}'"
            )
        user = _overrides_for(name, cls, overrides)
        variant_names = _variant_names(cls, variants)
        code_lengths = [b for b in (bits or DEFAULT_BITS)] if cls.code_type == "binary" else [None]
        for variant in variant_names:
            for b in code_lengths:
                base, record = {}, {}
                if config_source == "tuned":
                    base, record = tuned_config(name, dataset, b, tuned_dir), tuned_record(name, dataset, b, tuned_dir)
                merged = {**base, **cls.variants.get(variant, {}), **user}
                config = cls.resolve_config(merged, dataset=dataset.name, where=f"variant {variant!r}" if variant else "config")
                try:  # a combination the plugin refuses is a user error before the grid
                    cls.check_config(config, image_dim=dataset.image_dim, text_dim=dataset.text_dim, num_classes=dataset.num_classes)
                except (ValueError, TypeError) as exc:
                    raise CmrBenchError(f"--set for method '{name}': {exc}") from None
                for seed in seeds:
                    specs.append(RunSpec(dataset.name, proto, name, seed, variant, b, user, config, data=dataset.fingerprint,
                                         config_source=config_source, tuned=record))
    return specs


def _check_tuned(methods: list[str], dataset: Dataset, bits: list[int] | None, tuned_dir) -> None:
    """Every method's tuned file, before the grid: all missing ones named in one line."""
    missing = []
    for name in methods:
        lengths = list(bits or DEFAULT_BITS) if get_method(name).code_type == "binary" else [None]
        for b in lengths:
            try:
                tuned_config(name, dataset, b, tuned_dir)
            except TunedConfigMissing:
                missing.append(name + (f" at {b} bits" if b else ""))
    if missing:
        where = Path(tuned_dir or DEFAULT_TUNED_DIR) / dataset.name
        raise CmrBenchError(f"--config tuned: no tuned config in {where} for {', '.join(missing)} "
                            f"(run `cmr-bench tune --dataset {dataset.name} --methods ...` first, or leave them out)")


@dataclass
class GridResult:
    ran: list[dict] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    corrupt: list[tuple[RunSpec, str]] = field(default_factory=list)  # found corrupt, redone
    elsewhere: list[RunSpec] = field(default_factory=list)  # finished by another invocation meanwhile


@dataclass
class ExecutorOptions:
    """How runs execute: `jobs` local processes (1 = in this process), or Ray tasks."""

    jobs: int | None = 1
    executor: str = "local"  # "local" or "ray"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0
    threads: int = 1  # torch intra-op threads per run, whatever --jobs is (see set_run_threads)
    dataset_source: tuple | None = None  # ("load", name_or_manifest, root): workers load the dataset themselves
    run_timeout: float | None = None  # --run-timeout: seconds a run may take before it is stored as failed (local executors)


def make_executor(options: ExecutorOptions, dataset: Dataset, device: str, runs_dir: Path, n_runs: int):
    from cmr_bench.runner.executors import InlineExecutor, ProcessExecutor

    if options.executor == "ray":
        from cmr_bench.runner.ray_executor import RayExecutor

        import math

        # A local instance gets --jobs x --ray-cpus CPUs when --jobs is given, else every usable core.
        local_cpus = max(1, math.ceil(options.jobs * options.ray_cpus)) if options.jobs else None
        executor = RayExecutor(dataset, device, options.ray_address, options.ray_cpus, options.ray_gpus,
                               max_in_flight=options.jobs, local_cpus=local_cpus)
        executor.threads = options.threads  # the run's arithmetic, not the CPUs it declares
        return executor
    jobs = max(1, int(options.jobs or 1))  # None (auto) is settled by settle_jobs before this
    if jobs == 1:
        executor = InlineExecutor(dataset, device, runs_dir)
    else:
        executor = ProcessExecutor(min(jobs, n_runs), options.dataset_source or ("object", dataset), device, runs_dir,
                                   threads=options.threads)
    executor.run_timeout = options.run_timeout
    return executor


def settle_jobs(options: ExecutorOptions, todo: list[RunSpec], dataset: Dataset, device: str) -> str | None:
    """`--jobs auto` (options.jobs None with the local executor): fix the count for these
    pending runs (capacity.choose_jobs) and say how it was chosen; None when it was given."""
    if options.executor != "local" or options.jobs is not None:
        return None
    from cmr_bench.runner.capacity import choose_jobs, data_bytes

    choice = choose_jobs(todo, data_bytes(dataset), device, threads=options.threads)
    options.jobs = choice.jobs
    return choice.describe()


def _grid_left(pending, in_flight: dict, n_train: int | None, workers: int) -> float | None:
    """Expected seconds until the grid ends (idle 2-core figures): the pending runs packed onto
    the workers after the ones in flight finish their expected time; None without figures."""
    from cmr_bench.runner.estimate import run_seconds

    now = time.perf_counter()
    loads = []
    for spec, _lock, start in in_flight.values():
        t = run_seconds(spec.method, n_train)
        if t is None:
            return None
        loads.append(max(0.0, t - (now - start)))
    loads += [0.0] * max(0, workers - len(loads))
    for spec in pending:
        t = run_seconds(spec.method, n_train)
        if t is None:
            return None
        loads[loads.index(min(loads))] += t
    return max(loads) if loads else 0.0


def _written_since(folder: Path, since: float) -> bool:
    try:
        return (folder / "run.json").stat().st_mtime >= since - 2.0
    except OSError:
        return False


def run_grid(specs: list[RunSpec], dataset: Dataset, device: str, runs_dir: Path, force: bool = False,
             progress: bool | None = None, options: ExecutorOptions | None = None, poll_s: float = 0.5,
             heartbeat_s: float | None = None) -> GridResult:
    """Run every spec not finished yet. Each run is claimed in the store (its lock held while in
    flight), so concurrent invocations on one store share the grid instead of repeating it; runs
    another invocation holds are waited for at the end. Corrupt run folders are reported and
    redone. Progress: see display.py (`heartbeat_s`: seconds between status lines off a TTY)."""
    from cmr_bench.runner.display import GridDisplay, heartbeat_seconds

    options = options or ExecutorOptions()
    runs_dir = Path(runs_dir)
    result = GridResult()
    todo = _unfinished(specs, runs_dir, force, result)
    todo, at_once, n_train, how = _plan(todo, dataset, device, options)
    print(f"{len(specs)} runs: {len(result.skipped)} already finished, {len(todo)} to run{how}", flush=True)
    for spec, problem in result.corrupt:
        print(f"corrupt run folder {spec.folder(runs_dir)}: {problem}; it will be redone", flush=True)
    if not todo:
        return result
    executor = make_executor(options, dataset, device, runs_dir, len(todo))
    interactive = sys.stdout.isatty() if progress is None else progress
    display = GridDisplay(len(todo), interactive, heartbeat_seconds() if heartbeat_s is None else heartbeat_s)
    executor.on_progress = display.progress  # each run's training progress, whichever executor runs it
    schedule = _Schedule(todo, runs_dir, force, executor, display, result, poll_s, at_once, n_train)
    try:
        with run_threads(options.threads):
            while schedule.busy:
                schedule.retry_deferred()
                schedule.start_runs()
                if schedule.in_flight:
                    schedule.collect()
                elif schedule.deferred:
                    schedule.wait_for_others()
    except BaseException:
        schedule.abort()
        raise
    finally:
        display.close()
    executor.close()
    return result


def _plan(todo: list[RunSpec], dataset: Dataset, device: str, options: ExecutorOptions):
    """Longest runs first and `--jobs auto` settled for them: (todo in that order, runs at once or
    None, training items, what the grid's first line adds about it)."""
    how, at_once, n_train = "", None, None
    if todo:
        from cmr_bench.runner.display import _duration
        from cmr_bench.runner.estimate import grid_estimate, longest_first, train_items

        n_train = train_items(dataset, todo)
        todo = longest_first(todo, n_train)  # results do not depend on the order; the wall time does
        chosen = settle_jobs(options, todo, dataset, device)
        at_once = min(len(todo), options.jobs) if options.executor == "local" and options.jobs else None
        if at_once:
            seconds, unknown = grid_estimate(todo, n_train, workers=at_once)
            how = f", {at_once} at a time" + (f" ({chosen})" if chosen else "")
            how += f", about {_duration(seconds)} on an idle 2-core CPU" + (" for those with a figure" if unknown else "")
    return todo, at_once, n_train, how


def _unfinished(specs: list[RunSpec], runs_dir: Path, force: bool, result: GridResult) -> list[RunSpec]:
    """The specs to run; finished ones go to result.skipped (tidied), corrupt ones to result.corrupt."""
    todo = []
    for spec in specs:
        state = validate_run(spec.folder(runs_dir))
        if state.status == STATUS_DONE and not force:
            result.skipped.append(spec)
            store.tidy(spec.folder(runs_dir))
            continue
        if state.status == STATUS_CORRUPT:
            result.corrupt.append((spec, state.problem))
        todo.append(spec)
    return todo


class _Schedule:
    """The runs of one grid on their way through the store: pending, held by another invocation
    (deferred), in flight (claimed, submitted to the executor), finished."""

    def __init__(self, todo: list[RunSpec], runs_dir: Path, force: bool, executor, display, result: GridResult,
                 poll_s: float, at_once: int | None = None, n_train: int | None = None):
        self.runs_dir, self.force, self.executor, self.display, self.result = runs_dir, force, executor, display, result
        self.poll_s, self.total = poll_s, len(todo)
        self.at_once, self.n_train = at_once, n_train  # for the time left after each finished run
        self.pending = deque(todo)
        self.deferred: list[RunSpec] = []
        self.waited: dict[str, float] = {}  # folder -> when we found another invocation holding it
        self.in_flight: dict[int, tuple[RunSpec, store.Claim, float]] = {}
        self.finished = 0
        self.last_retry = 0.0
        self.announced = False

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.in_flight or self.deferred)

    def say(self, line: str) -> None:
        self.display.say(line)

    def retry_deferred(self) -> None:
        """Once every other run is started, try the ones another invocation held again."""
        if not self.pending and self.deferred and time.monotonic() - self.last_retry >= self.poll_s:
            self.pending.extend(self.deferred)
            self.deferred.clear()
            self.last_retry = time.monotonic()

    def start_runs(self) -> None:
        while self.pending and len(self.in_flight) < self.executor.capacity:
            self.start(self.pending.popleft())

    def start(self, spec: RunSpec) -> None:
        """Claim the run's folder and submit it, unless another invocation holds or finished it."""
        folder = spec.folder(self.runs_dir)
        claim = store.claim(folder)
        if claim is None:
            if str(folder) not in self.waited:
                self.waited[str(folder)] = time.time()
                self.say(f"{spec.dataset}/{spec.protocol} {spec.label}: in progress in another invocation "
                         f"({store.holder(folder)}); will wait for it")
            self.deferred.append(spec)
            return
        for note in claim.notes:
            self.say(f"{spec.label}: tidied a leftover of an interrupted write ({note})")
        if self._finished_elsewhere(spec, claim.state):
            claim.release()  # do not run it twice
            return
        try:
            token = self.executor.submit(spec)
        except BaseException:
            claim.release()
            raise
        self.in_flight[token] = (spec, claim, time.perf_counter())
        self.display.started(token, f"{spec.dataset}/{spec.protocol} {spec.label}")

    def _finished_elsewhere(self, spec: RunSpec, state) -> bool:
        folder = spec.folder(self.runs_dir)
        if str(folder) in self.waited and state.status in (STATUS_DONE, STATUS_FAILED) and \
                _written_since(folder, self.waited[str(folder)]):
            self._count_finished()
            self.say(f"[{self.finished}/{self.total}] {spec.dataset}/{spec.protocol} {spec.label}: {state.status} by another invocation")
            if state.status == STATUS_DONE:
                self.result.elsewhere.append(spec)
            else:
                self.result.failed.append(state.run)
            return True
        if state.status == STATUS_DONE and not self.force:  # finished between our first look and now
            self.result.elsewhere.append(spec)
            self._count_finished()
            self.say(f"[{self.finished}/{self.total}] {spec.dataset}/{spec.protocol} {spec.label}: done by another invocation")
            return True
        return False

    def collect(self) -> None:
        """Write what the executor hands back (the only place runs are written) and report it."""
        from cmr_bench.runner.display import _duration
        from cmr_bench.runner.execute import failed_record

        for outcome in self.executor.wait(self.poll_s):
            spec, claim, start = self.in_flight.pop(outcome.token)
            self.display.ended(outcome.token)
            try:
                record = outcome.record if outcome.kind == "record" else \
                    failed_record(spec, outcome.reason, outcome.detail, self.executor.name)
            except BaseException:
                claim.release()
                raise
            claim.commit(record)
            run = record.run
            self.finished += 1
            status = run["status"]
            line = f"[{self.finished}/{self.total}] {spec.dataset}/{spec.protocol} {spec.label}: {status} in {time.perf_counter() - start:.1f}s"
            if status != STATUS_DONE:
                line += f" ({run.get('reason')})"
                self.result.failed.append(run)
            self.result.ran.append(run)
            if self.at_once and (self.pending or self.in_flight):
                left = _grid_left(self.pending, self.in_flight, self.n_train, self.at_once)
                line += f"; about {_duration(left)} left for the grid" if left is not None else ""
            self.say(line)
            self.display.finished()

    def wait_for_others(self) -> None:
        if not self.announced:
            self.say(f"waiting for {len(self.deferred)} run(s) held by another invocation")
            self.announced = True
        time.sleep(self.poll_s)

    def abort(self) -> None:
        """Stop the executor's runs and give their folders up unwritten."""
        self.executor.close(abort=True)
        for _, claim, _ in self.in_flight.values():
            claim.release()

    def _count_finished(self) -> None:
        self.finished += 1
        self.display.finished()
