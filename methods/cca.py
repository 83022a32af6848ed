"""Canonical correlation analysis (Hotelling 1936), the classic baseline of Table II, as
used for cross-modal retrieval by Rasiwasia et al. (ACM MM 2010): linear projections of
both modalities into the space of maximal correlation; retrieval by cosine similarity."""

from __future__ import annotations

import numpy as np
import torch

from cmr_bench.data.types import Split
from cmr_bench.hparams import Param
from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.registry import register_method


def _inv_sqrt(c: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return vecs @ torch.diag(vals.clamp_min(1e-12).rsqrt()) @ vecs.T


@register_method
class CCA(Method):
    """Regularized CCA in closed form (float64, torch).

    C_xx + r_x I, C_yy + r_y I with r = reg * trace(C)/d (scale-free ridge); whiten both,
    take the SVD of the whitened cross-covariance, keep the top `dims` pairs.
    Codes are the centred projections, optionally scaled by the canonical correlations to the
    power `power` (0 = plain CCA; Gong et al. IJCV 2014 use 4).
    """

    name = "cca"
    code_type = "real"
    info = MethodInfo(
        display_name="CCA",
        full_name="Canonical Correlation Analysis",
        paper="N. Rasiwasia et al., A new approach to cross-modal multimedia retrieval",
        venue="ACM MM",
        year=2010,
        code_url=None,
        status="baseline",
        supervision="unsupervised",
        deviations=("A small scale-free ridge (reg * trace/d) is added to both covariances for numerical stability.",),
    )
    # `cmr-bench tune`: closed form, so a grid over its two knobs (cmr_bench/tuning.py)
    params = {
        "dims": Param(0, low=0, doc="dims 0 = min(image_dim, text_dim)"),
        "reg": Param(0.0001, low=0.0, search=("choice", [1e-06, 0.0001, 0.01, 0.1]),
            doc="ridge added to both covariances (scaled by trace/d)"),
        "power": Param(0.0, low=0.0, search=("choice", [0.0, 0.5, 1.0]),
            doc="canonical directions scaled by eigenvalue ** power (0 = plain CCA)"),
    }

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        x = torch.as_tensor(train.image, dtype=torch.float64, device=self.device)
        y = torch.as_tensor(train.text, dtype=torch.float64, device=self.device)
        self.mean_x, self.mean_y = x.mean(0), y.mean(0)
        x, y = x - self.mean_x, y - self.mean_y
        n = x.shape[0]
        cxx, cyy, cxy = x.T @ x / (n - 1), y.T @ y / (n - 1), x.T @ y / (n - 1)
        reg = self.config["reg"]
        cxx += reg * torch.trace(cxx) / cxx.shape[0] * torch.eye(cxx.shape[0], dtype=cxx.dtype, device=cxx.device)
        cyy += reg * torch.trace(cyy) / cyy.shape[0] * torch.eye(cyy.shape[0], dtype=cyy.dtype, device=cyy.device)
        wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
        u, s, vh = torch.linalg.svd(wx @ cxy @ wy)
        k = self.config["dims"] or min(x.shape[1], y.shape[1])
        k = min(k, len(s))
        scale = s[:k].clamp_min(0) ** self.config["power"]
        self.proj_x = (wx @ u[:, :k]) * scale
        self.proj_y = (wy @ vh.T[:, :k]) * scale
        self.correlations = s[:k]
        return [{"step": 0, "mean_canonical_correlation": float(s[:k].mean()), "top_correlation": float(s[0])}]

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        f = torch.as_tensor(features, dtype=torch.float64, device=self.device)
        if modality == "image":
            z = (f - self.mean_x) @ self.proj_x
        elif modality == "text":
            z = (f - self.mean_y) @ self.proj_y
        else:
            raise ValueError(f"unknown modality '{modality}'")
        return z.float().cpu().numpy()

    def state_dict(self):
        keys = ("mean_x", "mean_y", "proj_x", "proj_y", "correlations")
        return {k: getattr(self, k).cpu() for k in keys}

    def load_state_dict(self, state) -> None:
        for k, v in state.items():
            setattr(self, k, torch.as_tensor(v, device=self.device))
