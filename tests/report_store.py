"""A tiny run store for the report tests (synthetic data, seconds to build): cca (2 seeds), random
(1 seed) and a real-valued test plugin whose metadata and notes hold HTML-special characters."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from cmr_bench.plugin import Method, MethodInfo
from registering import registered

ODD_FULL_NAME = "Odd <b>method</b> & co"
ODD_DEVIATION = "<script>alert('x')</script> & <img src=x> \"quoted\" *not bold* `tick` | pipe"
ODD_NOTE = "a < b & c > d"
# Table II rows the store fills: our runs, and the label ceiling (synthetic has no published numbers).
TABLE2_ROWS = ["CCA", "Random", "test-odd", "Label oracle (ceiling)"]


class Odd(Method):
    name = "test-odd"
    code_type = "real"
    info = MethodInfo(ODD_FULL_NAME, "test", "test", 2026, status="baseline", deviations=(ODD_DEVIATION,))
    defaults = {"dim": 4}

    def fit(self, train, val=None):
        rng = np.random.default_rng(self.seed)
        self.w = {m: rng.normal(size=(train.features(m).shape[1], self.config["dim"])) for m in ("image", "text")}
        return [{"epoch": 1, "loss": 1.0}]

    def encode(self, features, modality):
        return (features @ self.w[modality]).astype(np.float32)

    def notes(self):
        return [ODD_NOTE]


@contextlib.contextmanager
def odd_method():
    with registered(Odd):
        yield Odd


def make_store(results: Path) -> Path:
    """Runs into `results` (the odd plugin must be registered)."""
    from cmr_bench.cli import main

    for methods, seeds in (("cca", "0,1"), ("random,test-odd", "0")):
        code = main(["run", "--methods", methods, "--dataset", "synthetic", "--seeds", seeds,
                     "--results-dir", str(results), "--no-progress"])
        assert code == 0, f"run {methods} failed"
    return results
