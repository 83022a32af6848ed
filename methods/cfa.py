"""Cross-modal Factor Analysis (Li, Dimitrova, Li & Sethi, ACM MM 2003), a Table II row:
orthonormal projections A, B that minimise ||X A - Y B||_F^2 (X, Y centred), i.e. the top
singular vectors of X^T Y. Unlike CCA it does not whiten, so it favours high-variance
directions that covary."""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Split
from cmr_bench.hparams import Param
from cmr_bench.methods._classical import LinearCodes
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method


@register_method
class CFA(LinearCodes):
    """min ||X A - Y B||_F^2 s.t. A^T A = B^T B = I  <=>  max tr(A^T X^T Y B): A, B = the
    left/right singular vectors of X^T Y (closed form, deterministic)."""

    name = "cfa"
    info = MethodInfo(
        display_name="CFA",
        full_name="Cross-modal Factor Analysis",
        paper="D. Li, N. Dimitrova, M. Li, I. K. Sethi, Multimedia content processing through cross-modal association",
        venue="ACM MM",
        year=2003,
        code_url=None,
        status="re-implementation",
        supervision="unsupervised",
        deviations=(
            "Features are centred on the training means; the paper's optional per-feature normalisation is not applied "
            "(wiki features are already histograms / topic proportions).",
        ),
    )
    # `cmr-bench tune`: deterministic, so a grid over its few knobs (cmr_bench/tuning.py)
    params = {
        "dims": Param(0, low=0, search=("choice", [0, 5, 10, 20]), doc="0 = min(image_dim, text_dim)"),
    }

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        x, y = np.asarray(train.image, np.float64), np.asarray(train.text, np.float64)
        mx, my = x.mean(0), y.mean(0)
        u, s, vt = np.linalg.svd((x - mx).T @ (y - my), full_matrices=False)
        k = self.config["dims"] or min(x.shape[1], y.shape[1])
        k = min(k, len(s))
        self._set(mx, u[:, :k], my, vt.T[:, :k], singular_values=s[:k])
        resid = float(((x - mx) @ u[:, :k] - (y - my) @ vt.T[:, :k]).var(0).sum())
        return [{"step": 0, "top_singular_value": float(s[0]), "residual": resid}]
