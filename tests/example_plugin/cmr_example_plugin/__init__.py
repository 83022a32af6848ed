"""A complete, minimal cmr-bench method plugin: each modality is mapped onto the label space
by ridge regression, so an image and a text of the same class land near each other."""

from __future__ import annotations

import numpy as np

from cmr_bench.hparams import Param
from cmr_bench.plugin import Method, MethodInfo


class ExampleLinear(Method):
    name = "example-linear"  # what --methods and the tables call it (lower case)
    code_type = "real"  # "real" (cosine ranking) or "binary" (+-1 codes of `bits` length)
    info = MethodInfo(
        full_name="Ridge projection onto labels (example plugin)",
        paper="cmr-bench docs/adding-a-method.md", venue="cmr-bench", year=2026,
        status="baseline", supervision="supervised",
    )
    # every hyperparameter, declared once: published value, accepted range, one-line doc
    params = {"reg": Param(1.0, low=0.0, doc="ridge of the regression onto the labels")}

    def fit(self, train, val=None):
        """Learn from the training split only; return the training log (a list of dicts)."""
        y = train.labels if train.multilabel else np.eye(self.num_classes)[train.labels]
        y = y - y.mean(0)
        self.state, log = {}, []
        for modality in ("image", "text"):
            x = np.asarray(train.features(modality), dtype=np.float64)
            mean = x.mean(0)
            x = x - mean
            w = np.linalg.solve(x.T @ x + self.config["reg"] * len(x) * np.eye(x.shape[1]), x.T @ y)
            self.state[modality + "_mean"], self.state[modality + "_w"] = mean, w
            log.append({"step": len(log), "loss": float(((x @ w - y) ** 2).mean())})
        return log

    def encode(self, features, modality):
        """One row of codes per item, each depending on its own item only."""
        x = np.asarray(features, dtype=np.float64) - self.state[modality + "_mean"]
        return (x @ self.state[modality + "_w"]).astype(np.float32)

    def state_dict(self):
        return {k: v.copy() for k, v in self.state.items()}

    def load_state_dict(self, state):
        self.state = {k: np.array(v) for k, v in state.items()}
