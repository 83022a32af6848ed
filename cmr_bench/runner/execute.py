"""One run: seed, split, fit, encode, evaluate both directions, store. Any failure inside
the method (exception, NaN loss or codes) is recorded as a failed run with its reason."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_bench.data.splits import carve_validation
from cmr_bench.data.types import Dataset
from cmr_bench.registry import get_method
from cmr_bench.runner.environment import environment
from cmr_bench.runner.spec import DEFAULT_RS, EVAL_KS, RunSpec
from cmr_bench.runner.store import STATUS_DONE, STATUS_FAILED, json_default, write_run

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


class RunFailed(Exception):
    """The method failed (diverged, produced invalid codes, raised)."""


class _OutOfTime(BaseException):
    """Raised by the run's alarm: a BaseException, so a plugin's `except Exception` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise _OutOfTime in this (main) thread after `seconds` (SIGALRM); no limit without
    seconds, or off the main thread (where no signal can be delivered)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise _OutOfTime()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_codes(codes: np.ndarray, n: int, code_type: str, bits: int | None, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype.kind not in "biuf":  # complex, object, strings: not codes the evaluator can rank
        raise RunFailed(f"{what}: codes must be real numbers, got dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[0] != n:
        raise RunFailed(f"{what}: expected ({n}, k) codes, got shape {codes.shape}")
    if not np.isfinite(codes).all():
        raise RunFailed(f"{what}: codes contain NaN or Inf (training diverged?)")
    if code_type == "binary":
        if bits and codes.shape[1] != bits:
            raise RunFailed(f"{what}: expected {bits}-bit codes, got {codes.shape[1]}")
        if not np.isin(codes, (-1, 1)).all():
            raise RunFailed(f"{what}: binary method returned codes other than ±1")
        return codes.astype(np.int8)
    return codes.astype(np.float32)


def _non_finite(value) -> bool:
    """True for a NaN/Inf number (python, numpy or a 0-d/1-element torch tensor or array)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (numbers.Real, np.generic)):
        try:
            return not math.isfinite(float(value))
        except (TypeError, ValueError, OverflowError):
            return False
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        try:
            return value.numel() == 1 and not math.isfinite(float(value.item()))
        except (TypeError, ValueError, RuntimeError):
            return False
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.number):
        return not np.isfinite(value).all()
    return False


def _check_log(log: list[dict]) -> None:
    for row in log:
        if not isinstance(row, dict):
            raise RunFailed(f"fit() must return a list of dicts, got a {type(row).__name__} row")
        for key, value in row.items():
            if _non_finite(value):
                raise RunFailed(f"training diverged: {key}={float(value)} at step {row.get('step', row.get('epoch', '?'))}")
            if not _json_ok({str(key): value}):  # the log is stored as JSON: an odd value fails this run only
                raise RunFailed(f"fit() logged '{key}' = a {type(value).__name__}, not a JSON value")


def _json_ok(row) -> bool:
    try:
        json.dumps(row, default=json_default)
        return True
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False


@dataclass
class RunRecord:
    """Everything a run stores, before it is written (what a remote worker sends back)."""

    spec: RunSpec
    run: dict[str, Any]
    metrics: dict | None
    log: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.run["status"]


def runner_info(executor: str = "inline") -> dict[str, Any]:
    return {"executor": executor, "pid": os.getpid(), "host": socket.gethostname()}


def failed_record(spec: RunSpec, reason: str, detail: str = "", executor: str = "inline") -> RunRecord:
    """A run that could not even report back (its worker died): stored as failed."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = {"spec": spec.to_json(), "status": STATUS_FAILED, "reason": reason, "traceback": detail,
           "runner": runner_info(executor), "started": now, "finished": now, "timings": {}}
    return RunRecord(spec, run, None)


def execute(spec: RunSpec, dataset: Dataset, device: str, runs_dir: Path, executor: str = "inline") -> dict[str, Any]:
    """Run one spec and store it (outside a grid: a script, a test); returns the stored run.json
    content. The grid itself computes in its executors and writes in its own process."""
    record = compute(spec, dataset, device, executor=executor)
    write_record(record, runs_dir)
    return record.run


def write_record(record: RunRecord, runs_dir: Path) -> None:
    write_run(record.spec.folder(runs_dir), record.run, record.metrics, record.log, record.arrays)


def compute(spec: RunSpec, dataset: Dataset, device: str, executor: str = "inline", timeout: float | None = None) -> RunRecord:
    """Seed, split, fit, encode and evaluate one spec, without touching the store. `timeout`
    (seconds, main thread only): a run still going after it is stored as failed."""
    from cmr_bench.evaluation import evaluate, to_jsonable

    cls = get_method(spec.method)
    protocol = dataset.protocol(spec.protocol)
    train_full = dataset.split(protocol.train)
    query, retrieval = dataset.split(protocol.query), dataset.split(protocol.retrieval)
    run: dict[str, Any] = {
        "spec": spec.to_json(),
        "method_info": {"code_type": cls.code_type, "full_name": cls.info.full_name, "status": cls.info.status},
        "dataset_manifest": {k: dataset.manifest.get(k) for k in ("name", "title", "image_features", "text_features")},
        "protocol": {"name": protocol.name, "train": protocol.train, "query": protocol.query, "retrieval": protocol.retrieval},
        "environment": environment(device),
        "runner": runner_info(executor),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    arrays: dict[str, np.ndarray] = {}
    log: list[dict] = []
    metrics = None
    t0 = time.perf_counter()
    try:
        if cls.uses_validation:
            train, val = carve_validation(train_full, spec.val_fraction, seed=spec.seed)
            arrays["split_val_indices"] = val.indices
        else:
            train, val = train_full, None
        arrays["split_train_indices"] = train.indices
        arrays["split_query_indices"] = query.indices
        arrays["split_retrieval_indices"] = retrieval.indices
        try:
            with time_limit(timeout):
                # spec.config was resolved once, when the grid was expanded; create() seeds the run.
                method = cls.create(
                    image_dim=dataset.image_dim, text_dim=dataset.text_dim, num_classes=dataset.num_classes,
                    label_kind=dataset.label_kind, config=spec.config, bits=spec.bits, device=device, seed=spec.seed,
                )
                run["notes"] = list(method.notes())
                log = list(method.fit(train, val) or [])
                _check_log(log)
                t_fit = time.perf_counter()
                codes = {}
                for role, split in (("query", query), ("retrieval", retrieval)):
                    for modality in ("image", "text"):
                        what = f"{role} {modality} codes"
                        codes[(role, modality)] = _check_codes(
                            method.encode(split.features(modality), modality), len(split), cls.code_type, spec.bits, what
                        )
                        arrays[f"codes_{role}_{modality}"] = codes[(role, modality)]
        except _OutOfTime:
            raise RunFailed(f"time limit: still running after --run-timeout {timeout:g} s; stopped") from None
        except SystemExit as exc:  # a plugin calling sys.exit() must not end the grid with nothing stored
            raise RunFailed(f"the method called sys.exit({exc.code!r})") from None
        except RunFailed:
            raise
        except Exception as exc:  # the plugin's own failure: record it, keep the grid going
            raise RunFailed(f"{type(exc).__name__}: {exc}") from exc
        t_encode = time.perf_counter()
        similarity = "hamming" if cls.code_type == "binary" else "cosine"
        n_r = len(retrieval)
        rs = tuple(r for r in DEFAULT_RS if r <= n_r) + ((n_r,) if n_r not in DEFAULT_RS else ())
        metrics = {"similarity": similarity, "n_query": len(query), "n_retrieval": n_r}
        for direction, (q_mod, r_mod) in DIRECTIONS.items():
            try:
                result = evaluate(
                    codes[("query", q_mod)], codes[("retrieval", r_mod)], query.labels, retrieval.labels,
                    similarity=similarity, ks=EVAL_KS, rs=rs, device=device,
                )
            except Exception as exc:  # codes the evaluator rejects are the method's failure
                raise RunFailed(f"evaluation of {direction} failed: {type(exc).__name__}: {exc}") from exc
            arrays[f"per_query_ap_{direction}"] = np.asarray(result["per_query_ap"])
            metrics[direction] = {k: v for k, v in to_jsonable(result).items() if k != "per_query_ap"}
        run.update(status=STATUS_DONE, timings={"fit_s": t_fit - t0, "encode_s": t_encode - t_fit, "evaluate_s": time.perf_counter() - t_encode})
    except RunFailed as exc:
        log = [row for row in log if _json_ok(row)]  # what JSON can hold is kept (a diverged loss curve)
        run.update(status=STATUS_FAILED, reason=str(exc).splitlines()[0] if str(exc) else "failed",
                   traceback=traceback.format_exc(limit=8), timings={"total_s": time.perf_counter() - t0})
        metrics = None
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return RunRecord(spec, run, metrics, log, arrays)
