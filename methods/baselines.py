"""Sanity baseline: the floor (random projections). Every real method should land above it; a
method below `random` is broken. The ceiling (codes from labels) needs no plugin: the table
code computes it from the labels (report/tables.py, `_label_ceiling`)."""

from __future__ import annotations

import numpy as np
import torch

from cmr_bench.data.types import Split
from cmr_bench.hparams import Param
from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.registry import register_method


@register_method
class RandomProjection(Method):
    """Independent Gaussian projections per modality: no learning, so no cross-modal signal.
    Its mAP is what label frequencies alone give (the floor)."""

    name = "random"
    code_type = "real"
    info = MethodInfo(
        display_name="Random",
        full_name="Random projections (floor)", paper="sanity baseline", venue="cmr-bench", year=2026,
        status="baseline", supervision="unsupervised",
    )
    # `cmr-bench tune`: deterministic, so a grid over its few knobs (cmr_bench/tuning.py)
    params = {
        "dims": Param(64, low=1, search=("choice", [16, 32, 64, 128]), doc="length of the random codes"),
    }

    def fit(self, train: Split, val: Split | None = None):
        g = torch.Generator().manual_seed(self.seed)
        k = self.config["dims"]
        self.proj = {
            "image": torch.randn(self.image_dim, k, generator=g, dtype=torch.float64),
            "text": torch.randn(self.text_dim, k, generator=g, dtype=torch.float64),
        }
        return [{"step": 0}]

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        return (torch.as_tensor(features, dtype=torch.float64) @ self.proj[modality]).float().numpy()

    def state_dict(self):
        return {k: v.clone() for k, v in self.proj.items()}

    def load_state_dict(self, state) -> None:
        self.proj = {k: torch.as_tensor(v) for k, v in state.items()}
