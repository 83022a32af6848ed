"""`cmr-bench ARGS...` with a slow test method registered (tests of Ctrl-C during `tune`):
its fit touches $TUNE_STARTED and then takes a while, in small steps."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from cmr_bench import registry
from cmr_bench.plugin import Method, MethodInfo


class SlowGrid(Method):
    name = "test-slow-tune"
    code_type = "real"
    info = MethodInfo("Slow", "test", "test", 2026, status="baseline")
    defaults = {"x": 0.5}
    search_space = {"x": ("choice", [0.1, 0.3, 0.5, 0.7, 0.9, 1.1])}

    def fit(self, train, val=None):
        Path(os.environ["TUNE_STARTED"]).touch()
        for _ in range(int(os.environ.get("TUNE_STEPS", "40"))):
            time.sleep(0.05)
        return []

    def encode(self, features, modality):
        return (features[:, :2] * self.config["x"]).astype(np.float32)


if __name__ == "__main__":
    registry._load()
    registry._add(SlowGrid, "tests")
    from cmr_bench.cli import main

    sys.exit(main(sys.argv[1:]))
