"""What the user sees while a grid runs: on a TTY one bar for the grid and one per run in flight
(epoch/iteration of total, latest loss, elapsed, remaining); off a TTY plain lines, and every
`heartbeat_s` (30 s) a line per run in flight, so a long run never looks dead in a log file.

Training progress arrives through `executor.on_progress`: the executor gives each run's method
hooks (cmr_bench/hooks.py) that call it directly (inline) or through the worker's pipe."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

HEARTBEAT_S = 30.0


def heartbeat_seconds() -> float:
    """HEARTBEAT_S, or $CMR_BENCH_HEARTBEAT_S (tests and log-watching users; 0 turns it off)."""
    import os

    try:
        return max(0.0, float(os.environ.get("CMR_BENCH_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


@dataclass
class _Run:
    label: str
    start: float
    done: int = 0
    total: int = 0
    loss: float | None = None
    unit: str = "epoch"
    bar: object = None

    def describe(self, now: float) -> str:
        elapsed = now - self.start
        if not self.total:
            return f"{self.label}: running, {_duration(elapsed)} elapsed"
        text = f"{self.label}: {self.unit} {self.done}/{self.total}"
        if self.loss is not None:
            text += f", loss {self.loss:.4g}"
        text += f", {_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", ~{_duration(elapsed / self.done * (self.total - self.done))} left"
        return text


class GridDisplay:
    """Thread-safe: the heartbeat thread and the scheduler both print."""

    def __init__(self, total_runs: int, interactive: bool, heartbeat_s: float = HEARTBEAT_S, stream=None):
        self.interactive = interactive
        self.heartbeat_s = heartbeat_s
        self.stream = stream or sys.stdout
        self.lock = threading.RLock()
        self.runs: dict[int, _Run] = {}
        self._stop = threading.Event()
        self._thread = None
        self.bar = None
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total_runs, desc="grid", unit="run", file=self.stream, position=0, dynamic_ncols=True)
        elif heartbeat_s and heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name="cmr-bench-heartbeat", daemon=True)
            self._thread.start()

    # --- messages -----------------------------------------------------------------------
    def say(self, line: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def finished(self, n: int = 1) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(n)

    # --- runs in flight -------------------------------------------------------------------
    def started(self, token: int, label: str) -> None:
        with self.lock:
            run = _Run(label, time.monotonic())
            if self.bar is not None:
                from tqdm import tqdm

                run.bar = tqdm(total=None, desc=label, unit="epoch", file=self.stream, leave=False,
                               position=1 + len(self.runs), dynamic_ncols=True)
            self.runs[token] = run

    def progress(self, token: int, done: int, total: int, loss: float | None = None, unit: str = "epoch") -> None:
        with self.lock:
            run = self.runs.get(token)
            if run is None:
                return
            run.done, run.total, run.unit = int(done), int(total), unit or "epoch"
            if loss is not None:
                try:
                    run.loss = float(loss)
                except (TypeError, ValueError):
                    pass
            if run.bar is not None:
                bar = run.bar
                if bar.total != run.total:
                    bar.total = run.total
                    bar.unit = run.unit
                bar.n = run.done
                if run.loss is not None:
                    bar.set_postfix_str(f"loss {run.loss:.4g}", refresh=False)
                bar.refresh()

    def ended(self, token: int) -> None:
        with self.lock:
            run = self.runs.pop(token, None)
            if run is not None and run.bar is not None:
                run.bar.close()

    # --- off a TTY: a line per run in flight every heartbeat_s ----------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        with self.lock:
            now = time.monotonic()
            for run in self.runs.values():
                print(f"  ... {run.describe(now)}", file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.lock:
            for run in self.runs.values():
                if run.bar is not None:
                    run.bar.close()
            self.runs.clear()
            if self.bar is not None:
                self.bar.close()
