"""Sanity baselines: the floor (random projections) and the ceiling (codes from labels).
Every real method should land between them; a method below `random` is broken."""

from __future__ import annotations

import numpy as np
import torch

from cmr_bench.data.types import Split
from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.registry import register_method


@register_method
class RandomProjection(Method):
    """Independent Gaussian projections per modality: no learning, so no cross-modal signal.
    Its mAP is what label frequencies alone give (the floor)."""

    name = "random"
    code_type = "real"
    info = MethodInfo(
        full_name="Random projections (floor)", paper="sanity baseline", venue="cmr-bench", year=2026,
        status="baseline", supervision="unsupervised",
    )
    defaults = {"dims": 64}

    def fit(self, train: Split, val: Split | None = None):
        g = torch.Generator().manual_seed(self.seed)
        k = int(self.config["dims"])
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


@register_method
class LabelOracle(Method):
    """Codes are the items' own (one-hot or multi-hot) labels: every relevant item ranks
    first, the ceiling of the protocol. The one plugin the runner hands labels at encode time
    (`oracle = True`); it is excluded from `--methods all` and marked in every table."""

    name = "label-oracle"
    code_type = "real"
    oracle = True
    in_all = False
    info = MethodInfo(
        full_name="Label oracle (ceiling)", paper="sanity baseline", venue="cmr-bench", year=2026,
        status="baseline", supervision="oracle",
        deviations=("Reads the labels of the items it encodes: a ceiling, not a method.",),
    )
    defaults = {}

    def fit(self, train: Split, val: Split | None = None):
        return [{"step": 0}]

    def encode(self, features: np.ndarray, modality: str, labels: np.ndarray | None = None) -> np.ndarray:
        if labels is None:
            raise ValueError("label-oracle needs the labels of the encoded items")
        if labels.ndim == 2:
            return labels.astype(np.float32)
        return np.eye(self.num_classes, dtype=np.float32)[labels]

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass
