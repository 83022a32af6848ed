"""Test-only plugin: ExampleLinear that can be slow (`sleep_s`, in `steps` reported epochs), diverge (`mode=nan-loss` or
`nan-codes`), raise (`mode=raise`) or kill its own process (`mode=die`), so the runner's
crash safety can be tested through `cmr-bench run` in worker processes and Ray tasks."""

from __future__ import annotations

import os
import time

import numpy as np

from cmr_bench.plugin import MethodInfo

from cmr_example_plugin import ExampleLinear

MODES = ("ok", "nan-loss", "nan-codes", "raise", "die")


class ExampleChaos(ExampleLinear):
    name = "example-chaos"
    in_all = False
    info = MethodInfo(
        full_name="Example plugin with failure modes (tests only)",
        paper="cmr-bench tests/example_plugin", venue="cmr-bench", year=2026,
        status="baseline", supervision="supervised",
    )
    defaults = {"reg": 1.0, "sleep_s": 0.0, "mode": "ok", "steps": 0}

    def fit(self, train, val=None):
        mode = self.config["mode"]
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        steps = int(self.config["steps"])
        if steps > 0:  # the sleep as `steps` epochs, reported like a trainer does (progress display tests)
            for i in range(steps):
                time.sleep(float(self.config["sleep_s"]) / steps)
                self.hooks.training_step(i + 1, steps, 1.0 / (i + 1))
        else:
            time.sleep(float(self.config["sleep_s"]))
        if mode == "die":
            os._exit(17)  # the process dies without a word, like a segfault or the OOM killer
        if mode == "raise":
            raise RuntimeError("chaos: asked to raise")
        log = super().fit(train, val)
        if mode == "nan-loss":
            log.append({"step": len(log), "loss": float("nan")})
        return log

    def encode(self, features, modality):
        codes = super().encode(features, modality)
        if self.config["mode"] == "nan-codes":
            codes[:] = np.nan
        return codes
