"""Joint Feature Selection and Subspace Learning (Wang, He, Wang, Wang & Tan, IEEE TPAMI 2016):
both modalities are regressed onto the label matrix, with l2,1 penalties on the projections
(coupled feature selection) and a multimodal graph that keeps same-class items of either
modality close in the label space. Published on wiki's own SIFT/LDA features: 0.306 / 0.228."""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Split
from cmr_bench.hparams import MAX_ITERATIONS, Param
from cmr_bench.methods._classical import LinearCodes, centred, knn_graph, l21, l21_weights, label_matrix
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method


def multimodal_graph_terms(xp, xq, lab, k):
    """Quadratic forms of tr(F^T L F), F = [Xp Up; Xq Uq], L the Laplacian of the multimodal
    graph W = [[Wp, S S^T], [S S^T, Wq]] (intra: same-class kNN with heat weights; inter:
    1 per shared label). Returns Xp^T Lpp Xp, Xq^T Lqq Xq and the cross term Xp^T S S^T Xq,
    without any n x n dense matrix (S S^T is applied through S)."""
    sts = lab.sum(0)  # class sizes: row sums of S S^T are lab @ sts
    inter_deg = lab @ sts
    out = []
    for x in (xp, xq):
        w = knn_graph(x, k, weight="heat", mask_labels=lab)
        deg = np.asarray(w.sum(1)).ravel() + inter_deg
        out.append(x.T @ (deg[:, None] * x) - x.T @ (w @ x))
    cross = (xp.T @ lab) @ (lab.T @ xq)
    return out[0], out[1], cross


@register_method
class JFSSL(LinearCodes):
    """min ||Xp Up - Y||^2 + ||Xq Uq - Y||^2 + l1 (||Up||_21 + ||Uq||_21) + l2 tr(F^T L F),
    solved by half-quadratic reweighting of the l2,1 norms and block updates (Up, then Uq),
    each a d x d linear solve; the smoothed objective never increases (pinned by a test)."""

    name = "jfssl"
    info = MethodInfo(
        display_name="JFSSL",
        full_name="Joint Feature Selection and Subspace Learning",
        paper="K. Wang, R. He, L. Wang, W. Wang, T. Tan, Joint feature selection and subspace learning for cross-modal retrieval",
        venue="IEEE TPAMI",
        year=2016,
        code_url="https://github.com/2012013382/JFSSL-Cross-Modal-Retrieval",
        status="re-implementation",
        supervision="supervised",
        deviations=(
            "The code_url is a third-party MATLAB re-implementation (read, not copied); it differs from the paper "
            "(dense all-pairs intra graph, degrees as counts, inter-modal Laplacian in the cross term); we follow the paper.",
            "Intra-modal graph: k nearest same-class neighbours with heat-kernel weights (t = mean kNN distance), our reading.",
            "lambda1, lambda2, k and feature centring chosen on a validation split carved from wiki's training set "
            "(docs/methods.md); the paper tunes them without saying on what.",
            "Linear on the raw features (0.274 / 0.213 on wiki against the published 0.3063 / 0.2275): no official code "
            "exists, the paper's preprocessing could not be read, and an RBF map reaching 0.301 / 0.233 was found through "
            "the test-set gap, so it is not applied (docs/methods.md).",
        ),
    )
    # chosen on validation carved from wiki train (benchmarks/tune_classical_wiki.py, docs/methods.md)
    # `cmr-bench tune`: deterministic, so a grid over its few knobs (cmr_bench/tuning.py)
    params = {
        "lambda1": Param(0.1, low=0.0, search=("choice", [0.001, 0.01, 0.1]),
            doc="weight of the l2,1 feature-selection norms"),
        "lambda2": Param(0.01, low=0.0, search=("choice", [0.001, 0.01, 0.1, 1.0]),
            doc="weight of the multimodal graph term"),
        "k": Param(50, low=1, search=("choice", [10, 50]), doc="nearest neighbours in the intra-modal graph"),
        "iterations": Param(20, low=1, high=MAX_ITERATIONS, smoke=3, doc="alternating-optimisation iterations"),
        "center": Param(True, doc="center the features with training means"),
        "eps": Param(1e-08, low=0.0, doc="numerical floor in the iteratively reweighted updates"),
    }

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        (xp, mp), (xq, mq) = centred(train.image, self.config["center"]), centred(train.text, self.config["center"])
        y = label_matrix(train.labels, self.num_classes)
        l1, l2, eps = self.config["lambda1"], self.config["lambda2"], self.config["eps"]
        ap, aq, cross = multimodal_graph_terms(xp, xq, y, self.config["k"])
        cp, cq = xp.T @ xp, xq.T @ xq
        bp, bq = xp.T @ y, xq.T @ y
        up = np.linalg.solve(cp + 1e-6 * np.trace(cp) / len(cp) * np.eye(len(cp)), bp)  # ridge start
        uq = np.linalg.solve(cq + 1e-6 * np.trace(cq) / len(cq) * np.eye(len(cq)), bq)

        def objective(up, uq):
            fit = ((xp @ up - y) ** 2).sum() + ((xq @ uq - y) ** 2).sum()
            graph = np.sum(up * (ap @ up)) + np.sum(uq * (aq @ uq)) - 2 * np.sum(up * (cross @ uq))
            return float(fit + l1 * (l21(up, eps) + l21(uq, eps)) + l2 * graph)

        log = [{"step": 0, "objective": objective(up, uq)}]
        for it in range(self.config["iterations"]):
            up = np.linalg.solve(cp + l1 * np.diag(l21_weights(up, eps)) + l2 * ap, bp + l2 * cross @ uq)
            uq = np.linalg.solve(cq + l1 * np.diag(l21_weights(uq, eps)) + l2 * aq, bq + l2 * cross.T @ up)
            log.append({"step": it + 1, "objective": objective(up, uq)})
        self._set(mp, up, mq, uq)
        return log
