"""Tuning a method's hyperparameters on validation data carved from the training split (Optuna).

A plugin declares each hyperparameter's search range in its declaration, as plain data (no
optuna import), gathered in the derived `search_space`:

    "lr": Param(1e-4, low=0.0, search=("logfloat", 1e-5, 1e-2)),   # log-uniform
    "alpha": Param(0.5, low=0.0, high=1.0, search=("float", 0.0, 1.0)),  # uniform
    "hidden": Param(512, low=1, search=("int", 256, 2048)),        # integers, inclusive
    "power": Param(0.0, low=0.0, search=("choice", [0.0, 0.5])),   # categorical

Every value of a range is one its hyperparameter accepts (cmr_bench.hparams). A space made only of choices is searched on its
full grid (deterministic closed-form methods: a few knobs); otherwise TPE, seeded. Objective:
the mean of Img2Txt and Txt2Img mAP@all, validation queries against the validation set, where
validation is `carve_validation(train, val_fraction, seed)` as the runner carves it. `cmr-bench
tune` loads the dataset with `train_only=True`: the test split's files are never opened.

A study's result is written with `cmr_bench.runner.tuned.write_tuned`; `cmr-bench run --config
tuned` (and `reproduce`) read it back through `cmr_bench.runner.tuned.tuned_config`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from typing import Any

import numpy as np

from cmr_bench.errors import CmrBenchError

KINDS = ("float", "logfloat", "int", "choice")
OBJECTIVES = {
    "validation": "mean of Img2Txt and Txt2Img mAP@all on the validation split carved from train (val vs val)",
    "fit": "mean of Img2Txt and Txt2Img mAP@all, validation queries (carved from train) against the training items "
           "the method fit (the protocol's database is its training set)",
}


def validation_database(proto) -> str:
    """What validation queries are ranked against, mirroring the protocol: a protocol whose
    database is its training split (the hashing protocol: unseen queries, a database of the
    items the model fit) gets the fitted part of train; one whose queries and database come from
    one split (the real-valued protocol) gets the validation split itself. Tuning a hashing
    method val-vs-val picked configs that fit the database worse: SDEH at 64 bits, T->I 0.74 -> 0.34."""
    return "fit" if proto.retrieval == proto.train else "validation"


def need_optuna():
    try:
        import optuna
    except ImportError:
        raise CmrBenchError("`cmr-bench tune` needs optuna: pip install 'cmr-bench[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_log = logging.getLogger("optuna.study._optimize")  # where Optuna reports a failed trial
    if not any(isinstance(f, _NoTraceback) for f in trial_log.filters):
        trial_log.addFilter(_NoTraceback())
    return optuna


class _NoTraceback(logging.Filter):
    """A failed trial (the plugin raised, its codes were NaN) is one line, not a traceback per trial."""

    def filter(self, record) -> bool:
        record.exc_info, record.exc_text = None, None
        return not str(record.msg).endswith("failed with value None.")  # Optuna's second line says nothing more


def search_space(cls) -> dict[str, tuple]:
    """The plugin's space (the `search` of its declarations), checked: a user error (one line)
    when empty or malformed, or when a range reaches values the hyperparameter refuses."""
    from cmr_bench.hparams import check_search

    space = cls.search_space
    if not isinstance(space, dict) or not space:
        raise CmrBenchError(f"method '{cls.name}' declares no search space (`search=` on a hyperparameter in its `params`)")
    for key, entry in space.items():
        where = f"method '{cls.name}': search_space['{key}']"
        if key not in cls.params:
            raise CmrBenchError(f"{where}: not a hyperparameter in its defaults")
        check_search(cls.params[key], key, entry, where)
    return dict(space)


def is_grid(space: dict) -> bool:
    return all(e[0] == "choice" for e in space.values())


def grid_size(space: dict) -> int:
    return math.prod(len(e[1]) for e in space.values())


def suggest(trial, space: dict) -> dict[str, Any]:
    out = {}
    for key, entry in space.items():
        kind = entry[0]
        if kind == "choice":
            # optuna stores categorical values that are JSON scalars; index others
            values = list(entry[1])
            out[key] = values[trial.suggest_categorical(key, list(range(len(values))))] if any(
                isinstance(v, (list, dict)) for v in values) else trial.suggest_categorical(key, values)
        elif kind == "int":
            out[key] = trial.suggest_int(key, int(entry[1]), int(entry[2]))
        else:
            out[key] = trial.suggest_float(key, float(entry[1]), float(entry[2]), log=kind == "logfloat")
    return out


def default_params(cls, space: dict, dataset: str) -> dict[str, Any] | None:
    """The method's defaults (for this dataset) as a trial's parameters; None when one lies outside the space."""
    defaults = cls.resolve_config({}, dataset=dataset)
    params = {}
    for key, entry in space.items():
        value = defaults[key]
        if entry[0] == "choice":
            values = list(entry[1])
            if value not in values:
                return None
            params[key] = values.index(value) if any(isinstance(v, (list, dict)) for v in values) else value
        elif not (entry[1] <= value <= entry[2]):
            return None
        else:
            params[key] = value
    return params


def check_validation_split(cls, dataset, val_fraction: float, seed: int, protocol: str | None = None) -> None:
    """--val-fraction must leave items on both sides of the carve (one line otherwise)."""
    from cmr_bench.data.splits import carve_validation
    from cmr_bench.runner.grid import DEFAULT_PROTOCOL

    proto = dataset.protocol(protocol or DEFAULT_PROTOCOL[cls.code_type])
    fit, val = carve_validation(dataset.split(proto.train), val_fraction, seed)
    if len(val) == 0 or len(fit) == 0:
        raise CmrBenchError(f"--val-fraction {val_fraction}: carving validation from the {len(fit) + len(val)} training items of "
                            f"'{dataset.name}' leaves {len(val)} validation and {len(fit)} training items; both need at least one")


def validation_score(cls, dataset, train_full, config: dict, bits: int | None, seed: int, val_fraction: float,
                     database: str = "validation", on_score=None) -> float:
    """Fit on train minus validation, rank validation queries against `database` ("validation":
    the validation split; "fit": the items fitted, see validation_database); never the test split.
    `on_score(step, score)` gets the trainer's intermediate scores against the same database."""
    from cmr_bench.data.splits import carve_validation
    from cmr_bench.evaluation import evaluate
    from cmr_bench.hooks import TrainHooks

    train, val = carve_validation(train_full, val_fraction, seed=seed)
    db = train if database == "fit" else val
    method = cls.create(image_dim=dataset.image_dim, text_dim=dataset.text_dim, num_classes=dataset.num_classes,
                        label_kind=dataset.label_kind, config=config, bits=bits, device="cpu", seed=seed)
    from cmr_bench.trainer import TorchMethod

    method.hooks = TrainHooks(validation=on_score, validation_database=db if database == "fit" else None)
    # A trainer method gets the validation split even when it does not select on it: it reports
    # its score there during training, which is what the pruner needs (the fit is unchanged).
    # No refit on train + validation after an epoch is selected: the score is read on validation.
    if isinstance(method, TorchMethod):
        method.refit_after_selection = False
    method.fit(train, val if cls.uses_validation or isinstance(method, TorchMethod) else None)
    query = {m: np.asarray(method.encode(val.features(m), m)) for m in ("image", "text")}
    codes = query if db is val else {m: np.asarray(method.encode(db.features(m), m)) for m in ("image", "text")}
    similarity = "hamming" if cls.code_type == "binary" else "cosine"
    scores = [evaluate(query[q], codes[r], val.labels, db.labels, similarity=similarity, ks=(), device="cpu")["map@all"]
              for q, r in (("image", "text"), ("text", "image"))]
    value = float(np.mean(scores))
    if not math.isfinite(value):
        raise ValueError(f"validation score {value}")
    return value


def open_study(optuna, storage: str, name: str, space: dict, seed: int, identity: dict, pruner=None):
    """Create or resume; a study of the same name made for other data or another space is an error."""
    sampler = (optuna.samplers.GridSampler({k: list(e[1]) if not any(isinstance(v, (list, dict)) for v in e[1])
                                            else list(range(len(e[1]))) for k, e in space.items()}, seed=seed)
               if is_grid(space) else optuna.samplers.TPESampler(seed=seed))
    for attempt in range(5):
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize",
                                        load_if_exists=True)
            stored = study.user_attrs.get("identity")
            break
        except CmrBenchError:
            raise
        except Exception as exc:  # sqlalchemy / optuna errors: unreachable URL, not a database, another schema
            # two `tune` starting at once on a new file both create its tables (or the study): the loser retries
            racing = ("already exists", "UNIQUE constraint failed", "database is locked")
            if attempt < 4 and (any(r in str(exc) for r in racing) or isinstance(exc, optuna.exceptions.DuplicatedStudyError)):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise CmrBenchError(f"study storage {storage}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unusable'}") from None
    if stored is not None and "database" not in stored:  # made before the database was recorded: val vs val
        stored = {**stored, "database": "validation"}
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity:
        keys = list(dict.fromkeys([*identity, *stored]))
        diff = ", ".join(f"{k} {stored.get(k)!r} != {identity.get(k)!r}" for k in keys if stored.get(k) != identity.get(k))
        raise CmrBenchError(f"study '{name}' in {storage} was made for other data or settings ({diff}); "
                            "use another --storage or delete it")
    check_trials(optuna, study, space, storage)
    if not is_grid(space) and study.trials:  # resumed: a fresh seed stream, or TPE's random start repeats the first trials
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _distributions(optuna, space: dict) -> dict:
    """The distribution `suggest` gives each key: what a trial of this study must carry."""
    d = optuna.distributions
    out = {}
    for key, entry in space.items():
        if entry[0] == "choice":
            values = list(entry[1])
            out[key] = d.CategoricalDistribution(list(range(len(values))) if any(isinstance(v, (list, dict)) for v in values) else values)
        elif entry[0] == "int":
            out[key] = d.IntDistribution(int(entry[1]), int(entry[2]))
        else:
            out[key] = d.FloatDistribution(float(entry[1]), float(entry[2]), log=entry[0] == "logfloat")
    return out


def check_trials(optuna, study, space: dict, storage: str) -> None:
    """A study file edited or written by something else (NaN or text scores, parameters of
    another space, unreadable distributions) is refused in one line before a trial runs."""
    where = f"study '{study.study_name}' in {storage}"
    expected = _distributions(optuna, space)
    try:
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == optuna.trial.TrialState.COMPLETE:
                v = t.value
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise CmrBenchError(f"{where}: trial {t.number} scored {v!r}, not a mAP in [0, 1]")
            for key, dist in t.distributions.items():
                if expected.get(key) != dist:
                    raise CmrBenchError(f"{where}: trial {t.number} has '{key}' from another search space ({type(dist).__name__})")
                if not dist._contains(dist.to_internal_repr(t.params[key])):
                    raise CmrBenchError(f"{where}: trial {t.number}'s '{key}' = {t.params[key]!r} lies outside its space")
    except CmrBenchError as exc:
        raise CmrBenchError(f"{exc} (edited, or not written by `cmr-bench tune`): use another --storage or delete it") from None
    except Exception as exc:  # undecodable JSON, values of the wrong type: optuna's own parsing fails
        raise CmrBenchError(f"{where} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                            "edited, or not written by `cmr-bench tune`; use another --storage or delete it") from None


class StudyBar:
    """One bar per study on a TTY: trials finished of the budget, best so far. Off a TTY it
    prints nothing (the command prints one line per finished study)."""

    def __init__(self, label: str, budget: int, done: int, interactive: bool, stream=None):
        import sys
        import threading

        self.bar = None
        self.lock = threading.Lock()  # optuna calls back from its worker threads (--jobs)
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=budget, initial=done, desc=label, unit="trial", file=stream or sys.stdout, dynamic_ncols=True)

    def trial_finished(self, best: float | None) -> None:
        with self.lock:
            if self.bar is not None:
                if best is not None:
                    self.bar.set_postfix_str(f"best {best:.4f}", refresh=False)
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _counted(trial) -> bool:
    """A finished trial counts against the budget unless Ctrl-C stopped it (a resumed study
    reruns that one) or it was never claimed (see _claim)."""
    return trial.state.is_finished() and not trial.user_attrs.get("interrupted") and not trial.user_attrs.get("unclaimed")


def _claim(study, trial, budget: int, optuna) -> str:
    """"" when `trial` may run, else why not. The storage is the arbiter between `tune`
    processes on one study: trial numbers are given out in creation order, so a trial runs only
    when fewer than `budget` trials numbered before it are finished-and-counted, running or
    waiting; and not when one of those holds the same grid point or enqueued values (two
    processes sampling at once). Concurrent invocations therefore never exceed the budget."""
    state = optuna.trial.TrialState
    key = lambda t: t.system_attrs.get("grid_id", t.system_attrs.get("fixed_params"))  # noqa: E731
    mine = key(study._storage.get_trial(trial._trial_id))  # Trial has no system_attrs of its own
    held = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and not t.user_attrs.get("unclaimed")
            and (_counted(t) or t.state in (state.RUNNING, state.WAITING)) and not _orphaned(t, optuna)]
    if mine is not None and any(key(t) == mine and t.state != state.WAITING for t in held):
        return "duplicate"
    return "over budget" if len(held) >= budget else ""


def _owner() -> dict:
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def _orphaned(trial, optuna) -> bool:
    """A running trial whose process (on this host) is gone: killed (SIGKILL, power loss)."""
    import os

    owner = trial.user_attrs.get("owner")
    if trial.state != optuna.trial.TrialState.RUNNING or not isinstance(owner, dict) or owner.get("host") != _owner()["host"]:
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError, TypeError, KeyError):
        return False
    return False


def release_orphans(study, optuna) -> None:
    """Orphaned trials (see _orphaned) become failed and interrupted: not counted, rerun first."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False):
        if _orphaned(t, optuna):
            try:
                storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:  # noqa: BLE001  another `tune` released it first
                pass


class _QuietTrials:
    """A logging filter: optuna's warning (and traceback) for trials that Ctrl-C stopped;
    the command says it in one line instead."""

    def __init__(self):
        self.numbers: set[int] = set()

    def filter(self, record) -> bool:
        import re

        m = re.match(r"Trial (\d+) failed", str(record.msg))
        return not (m and int(m.group(1)) in self.numbers)


def requeue_interrupted(study, optuna) -> None:
    """The trials Ctrl-C stopped run again first, with the same values: otherwise a grid would
    skip that point (its sampler counts it as visited) and TPE would never score it."""
    fail = optuna.trial.TrialState.FAIL
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        # over-budget trials of another process: their grid point or enqueued values were never scored
        unscored = t.user_attrs.get("unclaimed") == "over budget" and t.params and (
            "grid_id" in t.system_attrs or t.system_attrs.get("fixed_params"))
        if not t.params or (not unscored and (t.state != fail or not t.user_attrs.get("interrupted"))):
            continue  # (no params: stopped before its values were drawn; nothing to repeat)
        later = [u for u in trials if u.number > t.number and u.system_attrs.get("fixed_params") == t.params]
        if not later:
            study.enqueue_trial(t.params, skip_if_exists=False)


@contextlib.contextmanager
def _stop_workers_on_ctrl_c(stopping: threading.Event, active: bool):
    """With trials in worker threads, Ctrl-C reaches only the main thread, and optuna then waits
    for the workers' trials to end (a DSCMR trial: minutes). Set `stopping` first, so each
    worker's trial stops at its next validation report, marked interrupted (rerun on resume)."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        stopping.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def tune_method(name: str, dataset, trials: int, storage: str, seed: int = 0, jobs: int = 1, bits: int | None = None,
                val_fraction: float = 0.1, protocol: str | None = None, progress: bool = False, stream=None,
                startup: int = 5, warmup: int = 5, pin: dict | None = None) -> dict:
    """One study. Pruning: MedianPruner on the validation score the trainer reports per epoch
    (TrainHooks.validation, cmr_bench/hooks.py), after `startup` trials and `warmup` epochs; methods
    that report none (closed forms, no selection on validation) always run to the end.
    `pin`: hyperparameters held whatever a trial picks (the conformance tests' tiny sizes).
    Ctrl-C stops the study; every finished trial stays in the storage."""
    from cmr_bench import __version__
    from cmr_bench.registry import get_method
    from cmr_bench.runner.grid import DEFAULT_PROTOCOL

    optuna = need_optuna()
    cls = get_method(name)
    space = search_space(cls)
    proto = dataset.protocol(protocol or DEFAULT_PROTOCOL[cls.code_type])
    if cls.code_type == "binary" and bits is None:
        raise CmrBenchError(f"method '{name}' makes binary codes: give the code length to tune at with --bits")
    train_full = dataset.split(proto.train)
    budget = min(trials, grid_size(space)) if is_grid(space) else trials
    data = dataset.training_view().fingerprint  # the same whether the test split was loaded or not
    database = validation_database(proto)
    identity = {"dataset": dataset.name, "data": data, "method": name, "bits": bits, "seed": seed,
                "val_fraction": val_fraction, "space": json.loads(json.dumps(space, default=list)), "database": database}
    if pin:
        identity["pin"] = json.loads(json.dumps(pin, default=list))
    study_name = f"{dataset.name}/{name}" + (f"-{bits}bits" if bits else "")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    study = open_study(optuna, storage, study_name, space, seed, identity, pruner)
    if not study.trials and not is_grid(space):
        start = default_params(cls, space, dataset.name)
        if start is not None:  # trial 0 is the paper's defaults: tuning never reports worse than them on validation
            study.enqueue_trial(start)
    stopping = threading.Event()
    quiet = _QuietTrials()
    over_budget = threading.Event()

    def objective(trial):
        why = _claim(study, trial, budget, optuna)
        if why:  # another process holds the budget (or this point): not run, not counted
            suggest(trial, space)  # records the point, so a resume can enqueue it again
            trial.set_user_attr("unclaimed", why)
            if why == "over budget":
                over_budget.set()
                study.stop()
            raise optuna.TrialPruned(why)
        trial.set_user_attr("owner", _owner())  # a trial left running by a killed process is released (release_orphans)
        try:
            return run_trial(trial)
        except KeyboardInterrupt:  # Ctrl-C: a resumed study reruns this trial
            quiet.numbers.add(trial.number)
            trial.set_user_attr("interrupted", True)
            raise

    def run_trial(trial):
        config = cls.resolve_config({**suggest(trial, space), **(pin or {})}, dataset=dataset.name, where=f"trial {trial.number}")
        # a combination the plugin refuses is a failed trial, not a crash
        cls.check_config(config, image_dim=dataset.image_dim, text_dim=dataset.text_dim, num_classes=dataset.num_classes)

        def intermediate(step, score):
            if stopping.is_set():  # Ctrl-C in the main thread: stop this worker's trial now (rerun on resume)
                raise KeyboardInterrupt
            trial.report(float(score), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        return validation_score(cls, dataset, train_full, config, bits, seed, val_fraction, database, on_score=intermediate)

    complete = optuna.trial.TrialState.COMPLETE
    done = lambda: [t for t in study.trials if t.state == complete]  # noqa: E731
    t0 = time.perf_counter()
    release_orphans(study, optuna)
    counted = len([t for t in study.trials if _counted(t)])
    left = budget - counted
    if left > 0:  # a resumed study runs only what is left of the budget
        requeue_interrupted(study, optuna)
        bar = StudyBar(study_name, budget, counted, progress, stream)

        def after_trial(st, tr):
            best = max((t.value for t in st.get_trials(deepcopy=False, states=(complete,))), default=None)
            if not tr.user_attrs.get("unclaimed"):
                bar.trial_finished(best)

        import logging

        handlers = logging.getLogger("optuna").handlers
        for h in handlers:
            h.addFilter(quiet)
        try:
            # Enqueued trials (the defaults, interrupted ones) run one at a time first: with threads,
            # two workers can take the same waiting trial and the second one's result is refused
            # ("Cannot tell a COMPLETE trial": cm-gan, --jobs 2).
            waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
            first = min(left, waiting) if jobs > 1 else 0
            if first:
                study.optimize(objective, n_trials=first, n_jobs=1, catch=(Exception,), callbacks=[after_trial])
            counted_now = lambda: sum(_counted(t) for t in study.get_trials(deepcopy=False))  # noqa: E731
            while not over_budget.is_set():
                before = counted_now()
                if before >= budget:
                    break
                with _stop_workers_on_ctrl_c(stopping, jobs > 1):
                    study.optimize(objective, n_trials=budget - before, n_jobs=jobs, catch=(Exception,), callbacks=[after_trial])
                if counted_now() == before:  # only unclaimed trials (another process has the rest)
                    break
        finally:
            for h in handlers:
                h.removeFilter(quiet)
            bar.close()
            # wall time summed over every invocation, interrupted ones too (a resumed study once
            # recorded only its last part: SDEH 238 s of ~25 min)
            study.set_user_attr("seconds", float(study.user_attrs.get("seconds", 0.0)) + time.perf_counter() - t0)
            # TPE's picks depend on how many trials ran at once: every --jobs used is recorded
            study.set_user_attr("jobs", sorted({*study.user_attrs.get("jobs", []), jobs}))
    if not done():
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        why = failed[-1].system_attrs.get("fail_reason", "") if failed else ""
        raise CmrBenchError(f"tuning {name}: no trial finished ({why.splitlines()[-1] if why else 'every trial failed'})")
    best = study.best_trial
    picked = {k: (list(space[k][1])[v] if space[k][0] == "choice" and any(isinstance(x, (list, dict)) for x in space[k][1]) else v)
              for k, v in best.params.items()}
    return {
        "method": name, "dataset": dataset.name, "data": data, "protocol": proto.name, "bits": bits,
        "objective": OBJECTIVES[database], "value": float(best.value), "trials": len(done()), "budget": budget,
        "pruned": len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED and not t.user_attrs.get("unclaimed")]),
        "jobs": list(study.user_attrs.get("jobs", [jobs])),
        "sampler": "grid" if is_grid(space) else "tpe", "seed": seed, "val_fraction": val_fraction,
        "version": __version__, "seconds": round(float(study.user_attrs.get("seconds", time.perf_counter() - t0)), 1), "tuned": sorted(picked),
        "config": cls.resolve_config({**picked, **(pin or {})}, dataset=dataset.name),
    }
