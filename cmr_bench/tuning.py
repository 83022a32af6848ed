"""Tuning a method's hyperparameters on validation data carved from the training split (Optuna).

A plugin declares its search space next to its defaults, as plain data (no optuna import):

    search_space = {
        "lr": ("logfloat", 1e-5, 1e-2),   # log-uniform
        "alpha": ("float", 0.0, 1.0),     # uniform
        "hidden": ("int", 256, 2048),     # integers, inclusive
        "power": ("choice", [0.0, 0.5]),  # categorical
    }

Keys must be hyperparameters in `defaults`. A space made only of choices is searched on its
full grid (deterministic closed-form methods: a few knobs); otherwise TPE, seeded. Objective:
the mean of Img2Txt and Txt2Img mAP@all, validation queries against the validation set, where
validation is `carve_validation(train, val_fraction, seed)` as the runner carves it. Only the
protocol's training split is touched (the loader still reads and checks every file).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from cmr_bench.errors import CmrBenchError

KINDS = ("float", "logfloat", "int", "choice")
OBJECTIVE = "mean of Img2Txt and Txt2Img mAP@all on the validation split carved from train (val vs val)"


def need_optuna():
    try:
        import optuna
    except ImportError:
        raise CmrBenchError("`cmr-bench tune` needs optuna: pip install 'cmr-bench[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def search_space(cls) -> dict[str, tuple]:
    """The plugin's space, checked: a user error (one line) when empty or malformed."""
    space = getattr(cls, "search_space", None) or {}
    if not isinstance(space, dict) or not space:
        raise CmrBenchError(f"method '{cls.name}' declares no search space (a `search_space` dict next to its defaults)")
    for key, entry in space.items():
        where = f"method '{cls.name}': search_space['{key}']"
        if key not in cls.defaults:
            raise CmrBenchError(f"{where}: not a hyperparameter in its defaults")
        if not isinstance(entry, tuple) or not entry or entry[0] not in KINDS:
            raise CmrBenchError(f"{where}: expected (kind, ...) with kind one of {', '.join(KINDS)}, got {entry!r}")
        if entry[0] == "choice":
            if len(entry) != 2 or not isinstance(entry[1], (list, tuple)) or not entry[1]:
                raise CmrBenchError(f"{where}: ('choice', [values...]) with at least one value")
        else:
            ok = len(entry) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry[1:])
            if not ok or entry[1] >= entry[2] or (entry[0] == "logfloat" and entry[1] <= 0):
                raise CmrBenchError(f"{where}: ({entry[0]!r}, low, high) with low < high{' and low > 0' if entry[0] == 'logfloat' else ''}")
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


def validation_score(cls, dataset, train_full, config: dict, bits: int | None, seed: int, val_fraction: float) -> float:
    """Fit on train minus validation, score validation against itself; never the test split."""
    from cmr_bench.data.splits import carve_validation
    from cmr_bench.evaluation import evaluate

    train, val = carve_validation(train_full, val_fraction, seed=seed)
    method = cls.create(image_dim=dataset.image_dim, text_dim=dataset.text_dim, num_classes=dataset.num_classes,
                        label_kind=dataset.label_kind, config=config, bits=bits, device="cpu", seed=seed)
    method.fit(train, val if cls.uses_validation else None)
    codes = {m: np.asarray(method.encode(val.features(m), m)) for m in ("image", "text")}
    similarity = "hamming" if cls.code_type == "binary" else "cosine"
    scores = [evaluate(codes[q], codes[r], val.labels, val.labels, similarity=similarity, ks=(), device="cpu")["map@all"]
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
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize",
                                    load_if_exists=True)
        stored = study.user_attrs.get("identity")
    except CmrBenchError:
        raise
    except Exception as exc:  # sqlalchemy / optuna errors: unreachable URL, not a database, another schema
        raise CmrBenchError(f"study storage {storage}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unusable'}") from None
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity:
        diff = ", ".join(f"{k} {stored.get(k)!r} != {identity[k]!r}" for k in identity if stored.get(k) != identity[k])
        raise CmrBenchError(f"study '{name}' in {storage} was made for other data or settings ({diff}); "
                            "use another --storage or delete it")
    return study


def tune_method(name: str, dataset, trials: int, storage: str, seed: int = 0, jobs: int = 1, bits: int | None = None,
                val_fraction: float = 0.1, protocol: str | None = None, report=print, startup: int = 5, warmup: int = 5) -> dict:
    """One study. Pruning: MedianPruner on the validation score the trainer reports per epoch
    (cmr_bench.progress.validation_score), after `startup` trials and `warmup` epochs; methods
    that report none (closed forms, no selection on validation) always run to the end."""
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
    identity = {"dataset": dataset.name, "data": dataset.fingerprint, "method": name, "bits": bits, "seed": seed,
                "val_fraction": val_fraction, "space": json.loads(json.dumps(space, default=list))}
    study_name = f"{dataset.name}/{name}" + (f"-{bits}bits" if bits else "")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    study = open_study(optuna, storage, study_name, space, seed, identity, pruner)

    def objective(trial):
        from cmr_bench.progress import set_validation_listener

        picked = suggest(trial, space)
        config = cls.resolve_config(picked, dataset=dataset.name)

        def intermediate(step, score):
            trial.report(float(score), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        previous = set_validation_listener(intermediate)
        try:
            return validation_score(cls, dataset, train_full, config, bits, seed, val_fraction)
        finally:
            set_validation_listener(previous)

    done = lambda: [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]  # noqa: E731
    t0 = time.perf_counter()
    left = budget - len([t for t in study.trials if t.state.is_finished()])
    if left > 0:  # a resumed study runs only what is left of the budget
        def progress(st, tr):
            if report:
                best = st.best_value if done() else float("nan")
                report(f"{study_name}: trial {len(st.trials)}/{budget} {tr.state.name.lower()}"
                       + (f" {tr.value:.4f}" if tr.value is not None else "") + f", best {best:.4f}")
        study.optimize(objective, n_trials=left, n_jobs=jobs, catch=(Exception,), callbacks=[progress])
    if not done():
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        why = failed[-1].system_attrs.get("fail_reason", "") if failed else ""
        raise CmrBenchError(f"tuning {name}: no trial finished ({why.splitlines()[-1] if why else 'every trial failed'})")
    best = study.best_trial
    picked = {k: (list(space[k][1])[v] if space[k][0] == "choice" and any(isinstance(x, (list, dict)) for x in space[k][1]) else v)
              for k, v in best.params.items()}
    return {
        "method": name, "dataset": dataset.name, "data": dataset.fingerprint, "protocol": proto.name, "bits": bits,
        "objective": OBJECTIVE, "value": float(best.value), "trials": len(done()), "budget": budget,
        "pruned": len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]),
        "sampler": "grid" if is_grid(space) else "tpe", "seed": seed, "val_fraction": val_fraction,
        "version": __version__, "seconds": round(time.perf_counter() - t0, 1), "tuned": sorted(picked),
        "config": cls.resolve_config(picked, dataset=dataset.name),
    }


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise CmrBenchError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise CmrBenchError(f"cannot write {type(v).__name__} to TOML")


def write_tuned(result: dict, out_dir: Path) -> Path:
    """<out>/<dataset>/<method>[-<bits>bits].toml: the best config and how it was found."""
    path = Path(out_dir) / result["dataset"] / (result["method"] + (f"-{result['bits']}bits" if result["bits"] else "") + ".toml")
    lines = ["# written by `cmr-bench tune`"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in result.items() if k != "config" and v is not None]
    lines += ["", "[config]"] + [f"{k} = {_toml_value(v)}" for k, v in result["config"].items() if v is not None]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise CmrBenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

