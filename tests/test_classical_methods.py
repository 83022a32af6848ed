"""The classical methods (CFA, KCCA, JRL, LGCFL, JFSSL, LCFS, CCA-3V, SCM): each one on tiny
synthetic data, plus one property per method that pins its math."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.evaluation.core import evaluate
from cmr_bench.registry import all_methods

CLASSICAL = ("cfa", "kcca", "jrl", "lgcfl", "jfssl", "lcfs", "cca-3v", "scm")


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_train=160, n_test=80, image_dim=24, text_dim=10, num_classes=4, seed=3)
    return ds


def build(name, ds, **config):
    cls = all_methods()[name]
    return cls(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes,
               label_kind=ds.label_kind, config=cls.resolve_config(config), seed=0)


def mean_map(m, split):
    ci, ct = m.encode(split.image, "image"), m.encode(split.text, "text")
    a = evaluate(ci, ct, split.labels, split.labels, ks=(), device="cpu")["map@all"]
    b = evaluate(ct, ci, split.labels, split.labels, ks=(), device="cpu")["map@all"]
    return (a + b) / 2


@pytest.mark.parametrize("name", CLASSICAL)
def test_learns_cross_modal_signal(data, name):
    """On separable synthetic data every method beats random projections by a wide margin."""
    m = build(name, data)
    log = m.fit(data.splits["train"])
    assert log and all(np.isfinite(v) for row in log for v in row.values())
    rnd = build("random", data)
    rnd.fit(data.splits["train"])
    assert mean_map(m, data.splits["test"]) > mean_map(rnd, data.splits["test"]) + 0.15


def test_cfa_projections_are_orthonormal_and_optimal(data):
    tr = data.splits["train"]
    m = build("cfa", data, dims=5)
    m.fit(tr)
    a, b = m.params["proj_image"], m.params["proj_text"]
    assert np.allclose(a.T @ a, np.eye(5), atol=1e-10) and np.allclose(b.T @ b, np.eye(5), atol=1e-10)
    x, y = tr.image - tr.image.mean(0), tr.text - tr.text.mean(0)
    best = np.trace(a.T @ x.T @ y @ b)
    rng = np.random.default_rng(0)
    for _ in range(20):  # any other orthonormal pair correlates less: tr(A^T X^T Y B) is maximal
        qa = np.linalg.qr(rng.normal(size=a.shape))[0]
        qb = np.linalg.qr(rng.normal(size=b.shape))[0]
        assert np.trace(qa.T @ x.T @ y @ qb) <= best + 1e-9


def _dual_kcca_top_correlation(kx, ky, reg, r_x, r_y):
    """Hardoon et al.'s regularised dual on the centred kernels, solved directly:
    max a^T Kx Ky b / n subject to a^T (Kx^2/n + kappa Kx) a = 1 (same for b),
    kappa = reg * trace(Kx/n) / r, r the rank the primal map kept."""
    n = len(kx)
    h = np.eye(n) - 1.0 / n
    kx, ky = h @ kx @ h, h @ ky @ h

    def pinv_sqrt(m):
        vals, vecs = np.linalg.eigh((m + m.T) / 2)
        keep = vals > 1e-10 * vals.max()
        return (vecs[:, keep] / np.sqrt(vals[keep])) @ vecs[:, keep].T

    kap_x = reg * np.trace(kx) / n / r_x
    kap_y = reg * np.trace(ky) / n / r_y
    ax = pinv_sqrt(kx @ kx / n + kap_x * kx)
    ay = pinv_sqrt(ky @ ky / n + kap_y * ky)
    return np.linalg.svd(ax @ (kx @ ky / n) @ ay, compute_uv=False)[0]


@pytest.mark.parametrize("kind", ["rbf", "poly"])
def test_kcca_exact_equals_direct_dual_solve(kind):
    """Below exact_max the primal kernel map is exact: its top canonical correlation equals
    the one of the dual n x n problem solved directly."""
    ds = make_synthetic(n_train=40, n_test=10, image_dim=6, text_dim=5, num_classes=3, seed=2)
    tr = ds.splits["train"]
    m = build("kcca", ds, kernel=kind, reg=0.1, dims=3, eig_tol=1e-12)
    m.fit(tr)
    kx = m._k(tr.image, {k: m.params[f"{k}_image"] for k in ("landmarks", "gamma", "scale")})
    ky = m._k(tr.text, {k: m.params[f"{k}_text"] for k in ("landmarks", "gamma", "scale")})
    # the ridge in the primal is reg * trace(C)/r with r the kept rank; the same in the dual
    r_x, r_y = m.params["map_image"].shape[1], m.params["map_text"].shape[1]
    direct = _dual_kcca_top_correlation(kx, ky, 0.1, r_x, r_y)
    assert m.params["correlations"][0] == pytest.approx(direct, rel=1e-6)


def test_kcca_nystrom_beyond_exact_max_and_seeded():
    ds = make_synthetic(n_train=300, n_test=20, image_dim=8, text_dim=6, num_classes=3, seed=4)
    tr = ds.splits["train"]
    m0 = build("kcca", ds, exact_max=100, landmarks=50)
    m0.fit(tr)
    assert m0.params["landmarks_image"].shape == (50, 8)
    cls = all_methods()["kcca"]
    m1 = cls(image_dim=8, text_dim=6, num_classes=3, config=cls.resolve_config({"exact_max": 100, "landmarks": 50}), seed=1)
    m1.fit(tr)
    assert not np.array_equal(m0.params["landmarks_image"], m1.params["landmarks_image"])  # landmarks follow the seed


def _objective_trace(log, key="objective"):
    return np.array([row[key] for row in log])


@pytest.mark.parametrize("name", ["jfssl", "lcfs", "jrl"])
def test_alternating_objective_never_increases(data, name):
    """Half-quadratic block updates majorise the (smoothed) l2,1 / trace-norm objective: the
    objective is non-increasing, and strictly lower than at the ridge start."""
    config = {"iterations": 15}
    if name == "jrl":
        config.update(tol=0.0, gamma=10.0, sigma=10.0, k=10)
    m = build(name, data, **config)
    obj = _objective_trace(m.fit(data.splits["train"]))
    assert len(obj) == 16
    assert np.all(np.diff(obj) <= 1e-9 * np.abs(obj[:-1])), obj
    assert obj[-1] < obj[0]


def test_lgcfl_objective_never_increases(data):
    m = build("lgcfl", data, iterations=15, group_size=4)
    log = m.fit(data.splits["train"])
    for key in ("objective_image", "objective_text"):
        obj = _objective_trace(log, key)
        assert np.all(np.diff(obj) <= 1e-9 * np.abs(obj[:-1])), obj


def test_l21_penalty_selects_features(data):
    """With pure-noise image features appended, a strong l2,1 weight shrinks their rows of
    JFSSL's projection far more than the informative rows (coupled feature selection)."""
    from cmr_bench.data.types import Split

    tr = data.splits["train"]
    noise = np.random.default_rng(0).normal(size=(len(tr), 12))
    tr2 = Split("train", np.hstack([tr.image, noise]), tr.text, tr.labels, tr.indices)
    cls = all_methods()["jfssl"]

    def noise_ratio(lambda1):
        m = cls(image_dim=tr2.image.shape[1], text_dim=data.text_dim, num_classes=data.num_classes,
                config=cls.resolve_config({"lambda1": lambda1, "iterations": 30}), seed=0)
        m.fit(tr2)
        norms = np.linalg.norm(m.params["proj_image"], axis=1)
        return norms[data.image_dim:].mean() / norms[:data.image_dim].mean()

    assert noise_ratio(30.0) < 0.5 * noise_ratio(1e-4)


def test_jfssl_graph_terms_match_dense_laplacian(data):
    """The scalable quadratic forms equal X^T L X of the dense 2n x 2n multimodal Laplacian."""
    from cmr_bench.methods._classical import knn_graph, label_matrix
    from cmr_bench.methods.jfssl import multimodal_graph_terms

    tr = data.splits["train"]
    lab = label_matrix(tr.labels, data.num_classes)
    ap, aq, cross = multimodal_graph_terms(tr.image, tr.text, lab, 5)
    wp = knn_graph(tr.image, 5, "heat", lab).toarray()
    wq = knn_graph(tr.text, 5, "heat", lab).toarray()
    w = np.block([[wp, lab @ lab.T], [lab @ lab.T, wq]])
    lap = np.diag(w.sum(1)) - w
    n = len(tr)
    xp = np.hstack([tr.image, np.zeros((n, tr.text.shape[1]))])
    xq = np.hstack([np.zeros((n, tr.image.shape[1])), tr.text])
    full = np.vstack([xp, xq]).T @ lap @ np.vstack([xp, xq])
    dp = tr.image.shape[1]
    assert np.allclose(full[:dp, :dp], ap) and np.allclose(full[dp:, dp:], aq)
    assert np.allclose(full[:dp, dp:], -cross)


def test_knn_graph_is_sparse_symmetric_and_blocked(monkeypatch):
    """Built block by block (here blocks of 7 rows): same graph, symmetric, no self loops."""
    from cmr_bench.methods import _classical

    x = np.random.default_rng(0).normal(size=(30, 4))
    whole = _classical.knn_graph(x, 3)
    monkeypatch.setattr(_classical, "BLOCK", 7)
    blocked = _classical.knn_graph(x, 3)
    assert sp.issparse(blocked) and (whole != blocked).nnz == 0
    assert (blocked != blocked.T).nnz == 0 and blocked.diagonal().sum() == 0
    assert np.all(np.asarray(blocked.sum(1)).ravel() >= 3)


def test_cca3v_solves_generalised_eigenproblem(data):
    """Unscaled (power 0) directions satisfy S w = lambda D w with D the block diagonal of S."""
    from cmr_bench.methods._classical import label_matrix

    tr = data.splits["train"]
    m = build("cca-3v", data, dims=4, power=0.0, reg=0.0)
    m.fit(tr)
    lab = label_matrix(tr.labels, data.num_classes)
    views = [tr.image, tr.text, lab]
    z = np.concatenate([v - v.mean(0) for v in views], 1)
    s = z.T @ z / (len(z) - 1)
    dp, dq = tr.image.shape[1], tr.text.shape[1]
    # the label part of w is not stored; recover it from S w = lambda D w's third block row
    wx, wy, vals = m.params["proj_image"], m.params["proj_text"], m.params["eigenvalues"]
    sll = s[dp + dq:, dp + dq:] + 1e-12 * np.eye(lab.shape[1])
    for j in range(4):
        lam = vals[j]
        wl = np.linalg.lstsq((lam - 1) * sll, s[dp + dq:, :dp] @ wx[:, j] + s[dp + dq:, dp:dp + dq] @ wy[:, j], rcond=None)[0]
        w = np.concatenate([wx[:, j], wy[:, j], wl])
        lhs = s @ w
        d = np.zeros_like(s)
        for a, b in ((0, dp), (dp, dp + dq), (dp + dq, len(s))):
            d[a:b, a:b] = s[a:b, a:b]
        assert np.allclose(lhs[:dp + dq], lam * (d @ w)[:dp + dq], atol=1e-6 * np.abs(lhs).max())
    assert np.all(np.diff(vals) <= 1e-12)


def test_scm_codes_are_posteriors_and_sm_variant_skips_cca(data):
    tr, te = data.splits["train"], data.splits["test"]
    raw = {"center_posteriors": False}
    scm, sm = build("scm", data, **raw), build("scm", data, **all_methods()["scm"].variants["SM"], **raw)
    scm.fit(tr)
    sm.fit(tr)
    for m in (scm, sm):
        p = m.encode(te.image, "image")
        assert p.shape == (len(te), data.num_classes)
        assert np.allclose(p.sum(1), 1.0, atol=1e-5) and (p >= 0).all()
    centred = build("scm", data, center_posteriors=True)
    centred.fit(tr)
    assert np.allclose(centred.encode(te.text, "text"), scm.encode(te.text, "text") - 1.0 / data.num_classes, atol=1e-6)
    assert scm.params["proj_image"].shape[1] <= min(data.image_dim, data.text_dim)
    assert sm.params["proj_image"].shape == (data.image_dim, data.image_dim)  # standardisation only


def test_logistic_regression_matches_known_optimum():
    """fit_logistic's gradient is right: at its solution the penalised gradient vanishes."""
    from cmr_bench.methods.scm import _softmax, fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = np.eye(3)[rng.integers(0, 3, 120)]
    w = fit_logistic(x, y, l2=0.1, multilabel=False)
    xb = np.hstack([x, np.ones((120, 1))])
    g = xb.T @ (_softmax(xb @ w) - y) / 120
    g[:-1] += 0.1 * w[:-1]
    assert np.abs(g).max() < 1e-5


def test_jrl_knn_label_variant_codes_are_label_histograms(data):
    """The authors' ranking as a variant: each code is a kernel-weighted label histogram of the
    item's nearest projected training items: non-negative, sums to 1, per item."""
    tr, te = data.splits["train"], data.splits["test"]
    m = build("jrl", data, **all_methods()["jrl"].variants["knn-labels"])
    m.fit(tr)
    codes = m.encode(te.image, "image")
    assert codes.shape == (len(te), data.num_classes) and (codes >= 0).all()
    assert np.allclose(codes.sum(1), 1.0, atol=1e-5)
    assert np.allclose(m.encode(te.image[:3], "image"), codes[:3], atol=1e-6)
    assert mean_map(m, te) > 0.5


def test_same_features_references_are_sourced_and_in_range():
    """results/published/same_features_wiki.csv: a filled row states where its number was read
    (a table and a page, or the re-reporting paper's table and pages), its two MAPs lie in
    [0, 1] and avg is their mean; an unfilled row leaves all three empty and its note says what
    was searched, so a recalled number can never slip in unsourced."""
    import re
    from importlib import resources

    import pandas as pd

    with resources.as_file(resources.files("cmr_bench.published") / "same_features_wiki.csv") as p:
        df = pd.read_csv(p, dtype={"key": str, "note": str, "source": str})
    assert len(df) and set(df["table"]) == {"II-same-features"} and set(df["dataset"]) == {"wiki"}
    filled = df["img2txt"].notna()
    assert (filled == df["txt2img"].notna()).all() and (filled == df["avg"].notna()).all()
    for _, r in df[filled].iterrows():
        assert 0.0 <= r["img2txt"] <= 1.0 and 0.0 <= r["txt2img"] <= 1.0, r["method"]
        assert r["avg"] == pytest.approx((r["img2txt"] + r["txt2img"]) / 2, abs=6e-4), r["method"]
        assert re.search(r"\btable\b", r["source"], re.IGNORECASE) and re.search(r"\bpp?\. ?\d", r["source"]), r["method"]
    for _, r in df[~filled].iterrows():
        assert isinstance(r["note"], str) and "searched" in r["note"].lower(), r["method"]
    keys = [k for k in df["key"].dropna() if k]
    assert len(keys) == len(set(keys))  # the table shows one reference per plugin row
