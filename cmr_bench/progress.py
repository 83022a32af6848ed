"""Training progress, from the trainer to whoever displays it.

The trainer calls `training_step(done, total, loss)` after each epoch/iteration; the runner
installs a listener (a TTY bar, a line every ~30 s off a TTY, or a pipe to the parent process).
Without a listener the call costs one global lookup: plugins and tests need not care."""

from __future__ import annotations

import threading
from typing import Callable, Optional

Listener = Callable[[int, int, Optional[float], str], None]
_listener: Optional[Listener] = None


def set_listener(listener: Optional[Listener]) -> Optional[Listener]:
    """Install `listener(done, total, loss, unit)`; returns the previous one (to restore)."""
    global _listener
    previous, _listener = _listener, listener
    return previous


def training_step(done: int, total: int, loss: Optional[float] = None, unit: str = "epoch") -> None:
    """Report that `done` of `total` epochs (or iterations: `unit`) are finished; `loss` is the
    latest training loss as a Python float (pass None rather than forcing a device sync)."""
    if _listener is not None:
        _listener(done, total, loss, unit)


# `cmr-bench tune` prunes on the trainer's per-epoch validation score. Thread-local, so trials
# running in threads (--jobs) each see only their own training.
_local = threading.local()


def set_validation_listener(listener: Optional[Callable[[int, float], None]]):
    """Install `listener(step, score)` for this thread; returns the previous one (to restore)."""
    previous = getattr(_local, "validation", None)
    _local.validation = listener
    return previous


def set_validation_database(database):
    """For this thread: the items (a Split) the listener wants validation queries ranked against,
    or None for the validation split itself (what a trainer selects on). `tune` sets the fitted
    items for a protocol whose database is the training set. Returns the previous value."""
    previous = getattr(_local, "database", None)
    _local.database = database
    return previous


def validation_database():
    return getattr(_local, "database", None)


def validation_wanted() -> bool:
    """Whether someone (a `tune` trial) listens for validation scores in this thread."""
    return getattr(_local, "validation", None) is not None


def validation_score(step: int, score: float) -> None:
    """The mean of both directions' validation mAP after `step` epochs/iterations. A listener
    may raise to stop training (a pruned trial)."""
    listener = getattr(_local, "validation", None)
    if listener is not None:
        listener(step, score)
