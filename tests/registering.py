"""Test plugins in the registry for the length of a test, and the cheap binary method several
test files share."""

from __future__ import annotations

import contextlib

import numpy as np

from cmr_bench import registry
from cmr_bench.plugin import Method, MethodInfo


@contextlib.contextmanager
def registered(*classes):
    """The classes registered as plugins while the block runs, removed after (even on failure);
    yields the class, or the list when several."""
    registry._load()
    added = []
    try:
        for cls in classes:
            registry._add(cls, "tests")
            added.append(cls)
        yield classes[0] if len(classes) == 1 else list(classes)
    finally:
        for cls in added:
            registry._REGISTRY.pop(cls.name, None)
            registry._SOURCES.pop(cls.name, None)


def sign_method(name: str) -> type[Method]:
    """A cheap binary method: the signs of a seeded random projection of the features."""

    class Sign(Method):
        code_type = "binary"
        info = MethodInfo("Sign", "test", "test", 2026, status="baseline")
        defaults = {"scale": 1.0}  # noqa: RUF012 (the plugin interface: a class-level dict)

        def fit(self, train, val=None):
            rng = np.random.default_rng(self.seed)
            self.w = {m: rng.normal(size=(train.features(m).shape[1], self.bits)) for m in ("image", "text")}
            return [{"epoch": 1, "loss": 1.0}]

        def encode(self, features, modality):
            return np.where(features @ self.w[modality] >= 0, 1.0, -1.0).astype(np.float32)

    Sign.name = name
    return Sign
