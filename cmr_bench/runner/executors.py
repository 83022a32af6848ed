"""Where runs execute: in this process (`--jobs 1`), in N local worker processes
(`--jobs N`), or as Ray tasks (`--executor ray`, see ray_executor.py).

Every executor has the same small interface the scheduler in grid.py drives:
`capacity` (runs in flight at once), `submit(spec) -> token`, `wait(timeout) -> [Outcome]`
and `close()`; the scheduler may set `on_progress(token, done, total, loss, unit)` to receive
each run's training progress (the hooks the executor gives the method, cmr_bench/hooks.py).
Executors compute runs and never write them: each hands back the run's record
(or, for a worker that died, a failure), and the scheduler, which holds each run's lock while
the run is in flight, writes it. One writer, one path, so every run ends in the store as done
or failed, written atomically by the process that holds its lock.

This module imports nothing heavy at the top: worker processes set their thread counts
before numpy and torch are imported.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD, FAILED = "record", "failed"


@dataclass
class Outcome:
    token: int
    kind: str  # RECORD: write `record`; FAILED: write a failed run (reason, detail)
    record: Any = None  # execute.RunRecord
    reason: str = ""
    detail: str = ""


def usable_cpus() -> int:
    """Affinity mask capped by a cgroup CPU quota (one definition: cmr_bench.runner.environment)."""
    from cmr_bench.runner.environment import usable_cpus as cpus

    return cpus()


def threads_per_job(jobs: int) -> int:
    return max(1, usable_cpus() // max(1, jobs))


class InlineExecutor:
    """`--jobs 1`: runs execute one at a time in this process (exceptions of the runner
    itself propagate, as they always did)."""

    name = "inline"
    capacity = 1
    run_timeout: float | None = None  # --run-timeout, seconds (SIGALRM: this is the main thread)

    def __init__(self, dataset, device: str, runs_dir: Path):
        self.dataset, self.device, self.runs_dir = dataset, device, Path(runs_dir)
        self._queue: list[tuple[int, Any]] = []
        self._next = 0
        self.on_progress = None

    def submit(self, spec) -> int:
        self._next += 1
        self._queue.append((self._next, spec))
        return self._next

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        from cmr_bench.hooks import TrainHooks
        from cmr_bench.runner.execute import compute

        if not self._queue:
            return []
        token, spec = self._queue.pop(0)
        report = self.on_progress
        hooks = TrainHooks(progress=(lambda *step: report(token, *step)) if report is not None else None)
        record = compute(spec, self.dataset, self.device, executor=self.name, timeout=self.run_timeout, hooks=hooks)
        return [Outcome(token, RECORD, record=record)]

    def close(self, abort: bool = False) -> None:
        self._queue.clear()


# --- local worker processes ---------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the grid's process dies (even by SIGKILL), so
    a killed grid leaves no orphan that would keep writing into the store."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _load_source(source):
    kind = source[0]
    if kind == "object":
        return source[1]
    if kind == "load":
        from cmr_bench.data.loader import load_dataset

        return load_dataset(source[1], source[2])
    raise ValueError(f"unknown dataset source {kind!r}")


def _worker_main(conn, payload: bytes) -> None:  # pragma: no cover - runs in the child
    parent_pid, threads, blob = pickle.loads(payload)[:3]
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # before numpy loads: also covers libraries a plugin loads later
    from cmr_bench.runner.threads import run_threads

    with run_threads(threads):  # the same limits as a run in the parent (--jobs 1)
        _serve(conn, blob)


def _serve(conn, blob: bytes) -> None:  # pragma: no cover - runs in the child
    try:
        source, device, runs_dir = pickle.loads(blob)
        dataset = _load_source(source)
    except BaseException as exc:
        conn.send(("fatal", None, f"worker could not load the dataset: {type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    from cmr_bench.runner.execute import compute

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        token, spec, timeout = (msg + (None,))[:3]
        try:
            record = compute(spec, dataset, device, executor="process", timeout=timeout,
                             hooks=_progress_hooks(conn, token))
            conn.send((RECORD, token, record))  # the parent writes it, under the run's lock
        except BaseException as exc:
            conn.send((FAILED, token, f"runner error in worker: {type(exc).__name__}: {exc}".splitlines()[0], traceback.format_exc()))


PROGRESS = "progress"


def _progress_hooks(conn, token: int, every_s: float = 0.5):  # pragma: no cover - runs in the child
    """Hooks sending the run's training progress to the parent through the pipe (display.py), at
    most every `every_s` and always for the last step, so a fast loop does not flood the pipe."""
    import time

    from cmr_bench.hooks import TrainHooks

    last = [0.0]

    def send(done, total, loss=None, unit="epoch"):
        now = time.monotonic()
        if now - last[0] < every_s and done < total:
            return
        last[0] = now
        try:
            conn.send((PROGRESS, token, int(done), int(total), None if loss is None else float(loss), str(unit)))
        except (OSError, ValueError, TypeError):
            pass

    return TrainHooks(progress=send)


@dataclass
class _Worker:
    process: Any
    conn: Any
    token: int | None = None
    started: float = 0.0  # time.monotonic() when its current run was sent


# A run stuck inside one native call never sees its alarm: its worker is killed this long after.
KILL_GRACE_S = 30.0


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process died ({name}; killed, out of memory, or crashed)"
    return f"worker process died (exit code {exitcode})"


class ProcessExecutor:
    """`--jobs N`: N long-lived worker processes (spawn context: no fork of a torch process),
    each with max(1, cores // N) torch threads; each loads the dataset itself (or receives it
    pickled), computes each run and sends its record back for the parent to write. A worker that dies takes only
    its current run with it (recorded as failed); a fresh worker replaces it."""

    name = "process"
    run_timeout: float | None = None  # --run-timeout, seconds; each worker's main thread keeps the time

    def __init__(self, jobs: int, dataset_source, device: str, runs_dir: Path, threads: int | None = None):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.capacity = int(jobs)
        self.threads = threads or threads_per_job(jobs)
        self.blob = pickle.dumps((dataset_source, device, str(runs_dir)))
        self.workers: list[_Worker] = []
        self._next = 0
        self.on_progress = None

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        payload = pickle.dumps((os.getpid(), self.threads, self.blob))
        p = self.ctx.Process(target=_worker_main, args=(child, payload), daemon=True, name=f"cmr-bench-worker-{len(self.workers)}")
        p.start()
        child.close()
        w = _Worker(p, parent)
        self.workers.append(w)
        return w

    def submit(self, spec) -> int:
        idle = [w for w in self.workers if w.token is None]
        w = idle[0] if idle else self._start()
        self._next += 1
        w.token = self._next
        w.started = time.monotonic()
        w.conn.send((w.token, spec, self.run_timeout))
        return w.token

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        from multiprocessing.connection import wait as mp_wait

        busy = [w for w in self.workers if w.token is not None]
        if not busy:
            return []
        ready = set(mp_wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
        out = []
        for w in busy:
            if w.conn not in ready and w.process.sentinel not in ready:
                continue
            msg = None
            try:
                while w.conn.poll():
                    msg = w.conn.recv()
                    if msg is None or msg[0] != PROGRESS:
                        break
                    if self.on_progress is not None:
                        self.on_progress(*msg[1:])
                    msg = None
            except (EOFError, OSError):
                msg = None
            if msg is None and w.process.is_alive() and w.process.sentinel not in ready:
                continue  # only progress messages: the run goes on
            if msg is not None and msg[0] in (RECORD, FAILED):
                kind, token = msg[0], msg[1]
                out.append(Outcome(token, RECORD, record=msg[2]) if kind == RECORD else Outcome(token, FAILED, reason=msg[2], detail=msg[3]))
                w.token = None
                continue
            if msg is not None and msg[0] == "fatal":
                out.append(Outcome(w.token, FAILED, reason=msg[2], detail=msg[3]))
            else:
                w.process.join(timeout=5)
                out.append(Outcome(w.token, FAILED, reason=_exit_reason(w.process.exitcode)))
            self._drop(w)
        if self.run_timeout:
            now = time.monotonic()
            for w in [w for w in self.workers if w.token is not None and now - w.started > self.run_timeout + KILL_GRACE_S]:
                out.append(Outcome(w.token, FAILED, reason=f"time limit: still running {KILL_GRACE_S:g} s after "
                                                           f"--run-timeout {self.run_timeout:g} s; worker killed"))
                self._drop(w)
        return out

    def _drop(self, w: _Worker) -> None:
        try:
            w.conn.close()
        except OSError:
            pass
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=5)
        self.workers.remove(w)

    def close(self, abort: bool = False) -> None:
        for w in list(self.workers):
            if not abort and w.token is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in list(self.workers):
            if abort or w.token is not None:
                w.process.kill()
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            try:
                w.conn.close()
            except OSError:
                pass
        self.workers.clear()
