"""Shared pieces of the classical (closed-form / alternating least-squares) methods:
label matrices, l2,1 reweighting, blocked kNN graphs that never hold an n x n dense matrix,
ridge CCA, and a base class for methods whose codes are linear projections of the features."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cmr_bench.data.types import label_matrix as _label_matrix
from cmr_bench.plugin import Method

BLOCK = 2048  # rows per block when a computation would otherwise be n x n


def label_matrix(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The data layer's label matrix in float64, the precision the closed-form solvers use."""
    return _label_matrix(labels, num_classes, np.float64)


def centred(x: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean, mean) in float64; `center=False` keeps a zero mean."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0) if center else np.zeros(x.shape[1])
    return x - mean, mean


def l21(w: np.ndarray, eps: float = 0.0) -> float:
    """Sum of the (smoothed) l2 norms of the rows."""
    return float(np.sqrt((w * w).sum(1) + eps).sum())


def l21_weights(w: np.ndarray, eps: float) -> np.ndarray:
    """Diagonal of the half-quadratic reweighting matrix of the smoothed l2,1 norm:
    1 / (2 sqrt(||w_i||^2 + eps)); the quadratic surrogate touches the norm at w."""
    return 0.5 / np.sqrt((w * w).sum(1) + eps)


def knn_graph(x: np.ndarray, k: int, weight: str = "binary", mask_labels: np.ndarray | None = None) -> sp.csr_matrix:
    """Symmetric kNN graph of the rows of x (self excluded), built block by block: memory
    O(n k + BLOCK n), never a dense n x n matrix. weight: 'binary', 'heat' (exp(-d^2/(2 t^2)),
    t = mean kNN distance) or 'sigmoid' (1 / (1 + exp(d)), the JRL code's kernel).
    mask_labels (n x c): neighbours must share a label."""
    n = len(x)
    k = int(min(k, n - 1))
    if k <= 0:
        return sp.csr_matrix((n, n))
    sq = (x * x).sum(1)
    rows, cols, dists = [], [], []
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * x[s:e] @ x.T
        d2[np.arange(e - s), np.arange(s, e)] = np.inf  # no self loops
        if mask_labels is not None:
            d2[(mask_labels[s:e] @ mask_labels.T) <= 0] = np.inf
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dd = np.take_along_axis(d2, idx, 1)
        ok = np.isfinite(dd)
        rows.append(np.repeat(np.arange(s, e), k)[ok.ravel()])
        cols.append(idx.ravel()[ok.ravel()])
        dists.append(np.sqrt(np.maximum(dd.ravel()[ok.ravel()], 0.0)))
    r, c, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)
    if weight == "binary":
        v = np.ones_like(d)
    elif weight == "heat":
        t = max(float(d.mean()) if len(d) else 1.0, 1e-12)
        v = np.exp(-(d ** 2) / (2 * t * t))
    elif weight == "sigmoid":
        v = 1.0 / (1.0 + np.exp(d))
    else:
        raise ValueError(f"unknown graph weight '{weight}'")
    w = sp.csr_matrix((v, (r, c)), shape=(n, n))
    return w.maximum(w.T).tocsr()  # i ~ j when either is among the other's k nearest


def ridge_cca(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CCA from covariances with a scale-free ridge (reg * trace(C)/d on the diagonal, as in cca.py): returns
    image and text directions (columns, by decreasing correlation) and the correlations."""

    def inv_sqrt(c):
        c = c + reg * np.trace(c) / len(c) * np.eye(len(c))
        vals, vecs = np.linalg.eigh(c)
        vals = np.maximum(vals, 1e-12 * max(vals.max(), 1e-300))
        return (vecs / np.sqrt(vals)) @ vecs.T

    wx, wy = inv_sqrt(cxx), inv_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy)
    k = min(len(cxx), len(cyy))
    return wx @ u[:, :k], wy @ vt.T[:, :k], s[:k]


class LinearCodes(Method):
    """Base of the methods whose codes are (x - mean) @ P per modality. Subclasses set
    self.mean/self.proj in fit (numpy float64); `center=False` keeps a zero mean."""

    code_type = "real"

    def _set(self, mean_x, proj_x, mean_y, proj_y, **extra: Any) -> None:
        self.params = {"mean_image": np.asarray(mean_x, np.float64), "proj_image": np.asarray(proj_x, np.float64),
                       "mean_text": np.asarray(mean_y, np.float64), "proj_text": np.asarray(proj_y, np.float64)}
        self.params.update({k: np.asarray(v, np.float64) for k, v in extra.items()})

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        if modality not in ("image", "text"):
            raise ValueError(f"unknown modality '{modality}'")
        f = np.asarray(features, np.float64)
        return ((f - self.params[f"mean_{modality}"]) @ self.params[f"proj_{modality}"]).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = {k: np.asarray(v, np.float64) for k, v in state.items()}
