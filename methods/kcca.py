"""Kernel CCA (Hardoon, Szedmak & Shawe-Taylor, Neural Computation 2004), a Table II row:
regularised CCA between RBF (or polynomial) kernel feature spaces. Exact up to `exact_max`
training items (the kernel map spans every training item: wiki is exact); beyond that a
Nystrom map on `landmarks` random training items. All n-sized work is done in row blocks,
so memory is O(m^2 + block * m) with m = landmarks, never an n x n matrix."""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Split
from cmr_bench.hparams import Param
from cmr_bench.methods._classical import LinearCodes, ridge_cca
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method

BLOCK = 4096


def kernel(a: np.ndarray, b: np.ndarray, kind: str, gamma: float, degree: float, coef0: float, scale: float) -> np.ndarray:
    if kind == "rbf":
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-gamma * np.maximum(d2, 0.0))
    if kind == "poly":
        return (a @ b.T / scale + coef0) ** degree
    raise ValueError(f"unknown kernel '{kind}' (rbf or poly)")


def _top_svd(m: np.ndarray, k: int):
    """Top-k singular triplets, deterministic (fixed start vector); full SVD when k is large."""
    if k >= min(m.shape) - 1 or min(m.shape) < 50:
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        return u[:, :k], s[:k], vt[:k]
    from scipy.sparse.linalg import svds

    u, s, vt = svds(m, k=k, v0=np.ones(min(m.shape)) / np.sqrt(min(m.shape)), tol=1e-12)
    order = np.argsort(s)[::-1]
    u, s, vt = u[:, order], s[order], vt[order]
    sign = np.sign(u[np.abs(u).argmax(0), np.arange(k)])  # fix each pair's sign
    return u * sign, s, vt * sign[:, None]


@register_method
class KCCA(LinearCodes):
    """Kernel map phi(x) = k(x, Z) V diag(lambda)^-1/2 from the eigendecomposition of k(Z, Z)
    (Z = all training items when n <= exact_max: then phi(X) phi(X)^T = K exactly), then ridge
    CCA between phi(image) and phi(text). The ridge reg * trace(C)/r on the covariance equals
    the dual regulariser kappa * alpha^T K alpha of Hardoon et al. (pinned by a test)."""

    name = "kcca"
    info = MethodInfo(
        display_name="KCCA",
        full_name="Kernel Canonical Correlation Analysis",
        paper="D. R. Hardoon, S. Szedmak, J. Shawe-Taylor, Canonical correlation analysis: an overview with application to learning methods",
        venue="Neural Computation",
        year=2004,
        code_url=None,
        status="re-implementation",
        supervision="unsupervised",
        deviations=(
            "Solved in the primal of the (exact or Nystrom) kernel feature map rather than by the dual n x n "
            "eigenproblem or partial Gram-Schmidt; identical on wiki (exact), a Nystrom approximation beyond exact_max items.",
            "RBF width gamma = 1 / (gamma_scale * median squared distance) per modality; kernel, width, ridge and "
            "dimension chosen on a validation split carved from wiki's training set (docs/methods.md).",
        ),
    )
    # `cmr-bench tune`: deterministic, so a grid over its few knobs (cmr_bench/tuning.py)
    # chosen on validation carved from wiki train (benchmarks/tune_classical_wiki.py, docs/methods.md)
    params = {
        "kernel": Param("rbf", choices=("rbf", "poly"), doc="kernel: rbf or poly"),
        "gamma_scale": Param(4.0, low=0.0, search=("choice", [0.25, 1.0, 4.0, 16.0]),
            doc="RBF width: gamma = 1 / (gamma_scale * median squared distance)"),
        "degree": Param(3.0, low=0.0, doc="polynomial kernel degree"),
        "coef0": Param(1.0, doc="polynomial kernel offset"),
        "reg": Param(1.0, low=0.0, search=("choice", [0.1, 1.0, 10.0]), doc="ridge of the kernel CCA"),
        "dims": Param(10, low=1, doc="number of canonical directions kept"),
        "exact_max": Param(5000, low=1, doc="exact kernel up to this many training items, Nystrom beyond"),
        "landmarks": Param(2000, low=1, doc="Nystrom landmarks (random training items) beyond exact_max"),
        "eig_tol": Param(1e-10, low=0.0, doc="eigenvalues below this are dropped"),
    }
    variants = {"poly": {"kernel": "poly", "degree": 3.0, "reg": 1.0}}

    def _map_params(self, x: np.ndarray, rng_pick: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(x)
        exact = n <= self.config["exact_max"]
        z = x if exact else x[np.sort(rng_pick.choice(n, self.config["landmarks"], replace=False))]
        sub = x[np.random.default_rng(0).choice(n, min(n, 1000), replace=False)]  # fixed: width is not random
        d2 = (sub * sub).sum(1)[:, None] + (sub * sub).sum(1)[None, :] - 2.0 * sub @ sub.T
        med = float(np.median(d2[np.triu_indices(len(sub), 1)])) if len(sub) > 1 else 1.0
        gamma = 1.0 / (self.config["gamma_scale"] * max(med, 1e-12))
        scale = max(float((sub * sub).sum(1).mean()), 1e-12)
        p = {"landmarks": z, "gamma": np.array(gamma), "scale": np.array(scale)}
        kzz = self._k(z, p)
        kzz = (kzz + kzz.T) / 2
        if exact:  # centre the kernel: then phi(X) = V sqrt(lambda) has zero mean and a diagonal covariance
            p["col_mean"] = kzz.mean(0)
            p["all_mean"] = np.array(kzz.mean())
            kzz = kzz - p["col_mean"][None, :] - p["col_mean"][:, None] + p["all_mean"]
        vals, vecs = np.linalg.eigh(kzz)
        keep = vals > self.config["eig_tol"] * vals.max()
        p["map"] = vecs[:, keep] / np.sqrt(vals[keep])
        p["eigenvalues"] = vals[keep]
        return p

    def _k(self, a, p):
        c = self.config
        return kernel(a, p["landmarks"], c["kernel"], float(p["gamma"]), c["degree"], c["coef0"], float(p["scale"]))

    def _phi(self, a, p):
        k = self._k(a, p)
        if "col_mean" in p:  # centred exactly as the training kernel was
            k = k - p["col_mean"][None, :] - k.mean(1, keepdims=True) + p["all_mean"]
        return k @ p["map"]

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        x, y = np.asarray(train.image, np.float64), np.asarray(train.text, np.float64)
        n = len(x)
        exact = n <= self.config["exact_max"]
        rng = np.random.default_rng(self.seed)
        px, py = self._map_params(x, rng), self._map_params(y, rng)
        rx, ry = px["map"].shape[1], py["map"].shape[1]
        k = min(self.config["dims"] or min(rx, ry), rx, ry)
        reg = self.config["reg"]
        if exact:
            # phi(X) = V sqrt(lambda) (centred): C_xx = diag(lambda)/n, whitening is diagonal and
            # only the top-k singular pairs of the whitened cross-covariance are needed
            lx, ly = px["eigenvalues"] / n, py["eigenvalues"] / n
            fx = px["map"] * px["eigenvalues"]  # = V sqrt(lambda), the training features
            fy = py["map"] * py["eigenvalues"]
            dx = 1.0 / np.sqrt(lx + reg * lx.sum() / rx)
            dy = 1.0 / np.sqrt(ly + reg * ly.sum() / ry)
            m = (dx[:, None] * (fx.T @ fy / n)) * dy[None, :]
            u, corr, vt = _top_svd(m, k)
            wx, wy = dx[:, None] * u, dy[:, None] * vt.T
            mx, my = np.zeros(rx), np.zeros(ry)
        else:
            sx, sy = np.zeros(rx), np.zeros(ry)
            cxx, cyy, cxy = np.zeros((rx, rx)), np.zeros((ry, ry)), np.zeros((rx, ry))
            for s in range(0, n, BLOCK):  # covariances block by block: never n x m at once
                fx, fy = self._phi(x[s:s + BLOCK], px), self._phi(y[s:s + BLOCK], py)
                sx += fx.sum(0)
                sy += fy.sum(0)
                cxx += fx.T @ fx
                cyy += fy.T @ fy
                cxy += fx.T @ fy
            mx, my = sx / n, sy / n
            cxx = (cxx - n * np.outer(mx, mx)) / n
            cyy = (cyy - n * np.outer(my, my)) / n
            cxy = (cxy - n * np.outer(mx, my)) / n
            wx, wy, corr = ridge_cca(cxx, cyy, cxy, reg)
        self.params = {"proj_image": wx[:, :k], "proj_text": wy[:, :k], "mean_image": mx, "mean_text": my,
                       "correlations": corr[:k]}
        for name, p in (("image", px), ("text", py)):
            for key, v in p.items():
                self.params[f"{key}_{name}"] = np.asarray(v, np.float64)
        return [{"step": 0, "top_correlation": float(corr[0]), "mean_correlation": float(corr[:k].mean()),
                 "rank_image": rx, "rank_text": ry, "exact": float(exact)}]

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        if modality not in ("image", "text"):
            raise ValueError(f"unknown modality '{modality}'")
        p = {key[: -len(modality) - 1]: v for key, v in self.params.items() if key.endswith(f"_{modality}")}
        f = np.asarray(features, np.float64)
        out = [(self._phi(f[s:s + BLOCK], p) - self.params[f"mean_{modality}"]) @ self.params[f"proj_{modality}"]
               for s in range(0, len(f), BLOCK)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.params[f"proj_{modality}"].shape[1]), np.float32)
