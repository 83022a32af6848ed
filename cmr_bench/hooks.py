"""What a method reports while it trains, and to whom: callbacks the runner or `tune` hands to
the method (`method.hooks = TrainHooks(...)`) before calling `fit`.

Each fit has its own hooks object, so trials that `tune` runs in threads (--jobs) never see each
other's scores, and a method without hooks (a test, a script) pays nothing. The shared trainer
calls them; a plugin with its own `fit` may call them too (`self.hooks.training_step(...)`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

Progress = Callable[[int, int, Optional[float], str], None]
Validation = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainHooks:
    # progress(done, total, loss, unit): a bar, a heartbeat line, or the pipe to the grid's process
    progress: Optional[Progress] = None
    # validation(step, score): `tune`'s pruner; it may raise to stop training (a pruned trial)
    validation: Optional[Validation] = None
    # the items (a Split) validation queries are ranked against for `validation`; None: the
    # validation split itself. `tune` sets the fitted items where the protocol's database is train.
    validation_database: Any = None

    def training_step(self, done: int, total: int, loss: Optional[float] = None, unit: str = "epoch") -> None:
        """`done` of `total` epochs (or iterations: `unit`) are finished; `loss` is the latest
        training loss as a Python float (None rather than forcing a device sync)."""
        if self.progress is not None:
            self.progress(done, total, loss, unit)

    @property
    def wants_validation(self) -> bool:
        """Whether someone (a `tune` trial) listens for validation scores during this fit."""
        return self.validation is not None

    def validation_score(self, step: int, score: float) -> None:
        """The mean of both directions' validation mAP after `step` epochs/iterations."""
        if self.validation is not None:
            self.validation(step, score)


NO_HOOKS = TrainHooks()
