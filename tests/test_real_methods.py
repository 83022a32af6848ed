"""Method-specific checks of the deep real-valued plugins (SDCMR and its ablations, DSCMR, ACMR,
P3S, and the Table IV baselines beta-VAE and SDGZSL), beyond the registry-wide conformance test:
they learn, the ablation switches remove their terms, the gradient reversal layers send the
reversed adversarial gradient into the encoders, DSCMR selects its epoch on validation data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.evaluation import evaluate
from cmr_bench.methods import _blocks
from cmr_bench.registry import get_method
from cmr_bench.seeding import seed_everything
from cmr_bench.trainer import Batch, label_matrix, to_tensor


def cosine_map(query, gallery, query_labels, gallery_labels):
    return evaluate(query, gallery, query_labels, gallery_labels, similarity="cosine", device="cpu")["map@all"]


def label_targets(labels, num_classes, device):
    return to_tensor(label_matrix(labels, num_classes), device)

# Small networks and short schedules: each fit takes a fraction of a second to a few seconds.
FAST = {
    "sdcmr": {"hidden": [64, 32], "k": 16, "iterations": 150},
    "dscmr": {"hidden": 64, "common": 32, "epochs": 30, "batch_size": 25, "lr": 5e-4},
    "acmr": {"image_hidden": [64, 32], "text_hidden": [32, 32], "k": 16, "epochs": 25},
    "p3s": {"hidden": [64, 32], "k": 16, "iterations": 150},
    "beta-vae": {"hidden": [64, 32], "k": 16, "iterations": 150},
    "sdgzsl": {"hidden": [64, 32], "k": 16, "iterations": 150, "relation_hidden": 64},
}
NAMES = sorted(FAST)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(multilabel=False, noise=0.3):
    ds = make_synthetic(n_train=300, n_test=120, image_dim=24, text_dim=12, num_classes=5,
                        multilabel=multilabel, noise=noise, seed=3)
    return ds, ds.splits["train"], ds.splits["test"]


def _build(name, ds, overrides=None, seed=0):
    cls = get_method(name)
    seed_everything(seed)
    config = cls.resolve_config({**FAST[name], **(overrides or {})})
    return cls(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes,
               label_kind=ds.label_kind, config=config, device="cpu", seed=seed)


def _fit(m, train):
    if type(m).uses_validation:
        rows = np.arange(len(train))
        return m.fit(train.subset(rows[40:]), train.subset(rows[:40], "val"))
    return m.fit(train)


def _maps(m, test):
    ci, ct = m.encode(test.image, "image"), m.encode(test.text, "text")
    return cosine_map(ci, ct, test.labels, test.labels), cosine_map(ct, ci, test.labels, test.labels)


def _random_map(test, k=16):
    rng = np.random.default_rng(0)
    ci, ct = rng.normal(size=(len(test), k)), rng.normal(size=(len(test), k))
    return cosine_map(ci, ct, test.labels, test.labels), cosine_map(ct, ci, test.labels, test.labels)


# --- metadata -------------------------------------------------------------------------------

def test_registered_names_and_metadata():
    for name in NAMES:
        cls = get_method(name)
        assert cls.name == name and cls.code_type == "real"
        assert set(FAST[name]) <= set(cls.defaults), name
        assert cls.info.deviations, f"{name} documents no deviation"
    assert get_method("p3s").info.status == "re-implementation"
    assert get_method("dscmr").uses_validation
    assert set(get_method("sdcmr").variants) == {"w/o L_rec", "w/o L_sim", "w/o L_ad", "w/o L_ind", "full-gradient"}
    d = get_method("sdcmr").defaults
    assert (d["k"], d["alpha"], d["beta"], d["gamma"], d["eta"]) == (32, 1.0, 5.0, 10.0, 1.0)
    assert (d["lr"], d["batch_size"], d["iterations"], d["hidden"]) == (2e-4, 64, 500, [2048, 1024])
    assert get_method("beta-vae").defaults["beta"] == 5.0


# --- they learn -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_beats_random_on_easy_synthetic_data(name):
    ds, train, test = _data()
    m = _build(name, ds)
    log = _fit(m, train)
    assert log and all(np.isfinite(v) for row in log for v in row.values() if isinstance(v, float))
    i2t, t2i = _maps(m, test)
    r_i2t, r_t2i = _random_map(test)
    assert i2t > r_i2t + 0.25 and t2i > r_t2i + 0.25, (name, i2t, t2i, r_i2t, r_t2i)


@pytest.mark.parametrize("name", NAMES)
def test_multilabel_data(name):
    ds, train, test = _data(multilabel=True)
    quick = {key: value for key, value in FAST[name].items()}
    for key in ("iterations", "epochs"):
        if key in quick:
            quick[key] = 5
    m = _build(name, ds, quick)
    _fit(m, train)
    ci, ct = m.encode(test.image, "image"), m.encode(test.text, "text")
    assert ci.shape == ct.shape and ci.shape[0] == len(test) and ci.dtype == np.float32
    assert np.isfinite(ci).all() and np.isfinite(ct).all()


# --- SDCMR specifics -------------------------------------------------------------------------

@pytest.mark.parametrize("variant,term", [("w/o L_rec", "L_rec"), ("w/o L_sim", "L_sim"), ("w/o L_ad", "L_ad"), ("w/o L_ind", "L_ind")])
def test_sdcmr_ablations_switch_their_term_off(variant, term):
    ds, train, _ = _data()
    cls = get_method("sdcmr")
    full = _build("sdcmr", ds, {"iterations": 4}).fit(train)
    ablated = _build("sdcmr", ds, {"iterations": 4, **cls.variants[variant]}).fit(train)
    assert all(row[term] != 0.0 for row in full)
    assert all(row[term] == 0.0 for row in ablated)
    if term == "L_ad":  # no classifier is even evaluated
        assert all("ce_sem_s" not in row for row in ablated)
    others = {"L_rec", "L_sim", "L_ad", "L_ind"} - {term}
    assert all(row[t] != 0.0 for row in ablated for t in others)


def _sdcmr_batch(m, train, n=32):
    x = {"image": to_tensor(train.image[:n], "cpu"), "text": to_tensor(train.text[:n], "cpu")}
    return x, label_targets(train.labels[:n], m.num_classes, "cpu")


def _grads(m, x, y, params):
    m.net.zero_grad(set_to_none=True)
    objective, _ = m.losses(x, y, None, sample=False)
    objective.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_sdcmr_gradient_reversal_reaches_the_encoders_with_the_right_sign(monkeypatch):
    """With the GRLs in place, E_s receives -gamma * dCE(C^u(z^s), modality) and E_u receives
    -gamma * dCE(C^s(z^u), y); the classifiers receive the plain (unreversed) gradients."""
    import torch.nn.functional as F

    import cmr_bench.methods.sdcmr as sdcmr

    ds, train, _ = _data()
    m = _build("sdcmr", ds, {"alpha": 0.0, "beta": 0.0, "eta": 0.0})
    x, y = _sdcmr_batch(m, train)
    gamma = float(m.config["gamma"])
    e_s = m.net.enc_s.first["image"][0].weight  # first layer of E_s (image branch)
    e_u = m.net.enc_u["text"][0][0].weight  # first layer of E_t
    c_u = m.net.cls_u[0].weight  # modality classifier
    c_s = m.net.cls_s[0].weight  # semantic classifier
    params = [e_s, e_u, c_u, c_s]
    with_grl = _grads(m, x, y, params)
    monkeypatch.setattr(sdcmr, "grad_reverse", lambda z, weight=1.0: z)
    without = _grads(m, x, y, params)

    # direct gradients of the adversarial terms alone (no GRL)
    def direct(term_fn, param):
        m.net.zero_grad(set_to_none=True)
        term_fn().backward()
        return param.grad.clone()

    mod_img = torch.zeros(len(y), dtype=torch.long)
    ce_mod_s_img = lambda: F.cross_entropy(m.net.cls_u(m.net.enc_s(x["image"], "image")[0]), mod_img)
    ce_sem_u_txt = lambda: F.cross_entropy(m.net.cls_s(m.net.enc_u["text"](x["text"])[0]), y.argmax(1))
    g_es = direct(ce_mod_s_img, e_s)
    g_eu = direct(ce_sem_u_txt, e_u)
    assert g_es.abs().sum() > 0 and g_eu.abs().sum() > 0
    # reversing flips the sign of exactly the adversarial contribution: difference = -2 gamma g
    for got, plain, g in ((with_grl[0], without[0], g_es), (with_grl[1], without[1], g_eu)):
        torch.testing.assert_close(got - plain, -2 * gamma * g, rtol=1e-3, atol=1e-3 * gamma * g.abs().max().item())
    # the classifiers themselves are not reversed
    torch.testing.assert_close(with_grl[2], without[2])
    torch.testing.assert_close(with_grl[3], without[3])


def _sdcmr_step(m, train):
    """One training step (the trainer's hook); returns {block: parameters changed?}."""
    x, y = _sdcmr_batch(m, train)
    m.noise = torch.Generator().manual_seed(0)
    m.optimizers = m.make_optimizers()
    before = {name: [p.detach().clone() for p in getattr(m.net, name).parameters()]
              for name in ("enc_u", "dec", "cls_u", "cls_s", "enc_s")}
    m.step(Batch(x, y))
    return {name: any(not torch.equal(p0, p) for p0, p in zip(ps, getattr(m.net, name).parameters()))
            for name, ps in before.items()}


def test_sdcmr_per_block_routing_follows_eqs_16_to_20():
    """Default routing: with L_rec and L_ind off, E_v/E_t get nothing (no KL of z^u, no L_ad,
    Eq. 16) and the decoders nothing (Eq. 17); the classifiers and E_s still move. The
    full-gradient variant moves E_v/E_t through the KL and the reversed L_ad."""
    ds, train, _ = _data()
    moved = _sdcmr_step(_build("sdcmr", ds, {"alpha": 0.0, "eta": 0.0}), train)
    assert moved == {"enc_u": False, "dec": False, "cls_u": True, "cls_s": True, "enc_s": True}
    full = _sdcmr_step(_build("sdcmr", ds, {"alpha": 0.0, "eta": 0.0, **get_method("sdcmr").variants["full-gradient"]}), train)
    assert full["enc_u"] and full["enc_s"] and not full["dec"]
    # with L_rec on, the decoders and E_v/E_t move; with L_ad off, the classifiers do not
    moved = _sdcmr_step(_build("sdcmr", ds, {"gamma": 0.0}), train)
    assert moved == {"enc_u": True, "dec": True, "cls_u": False, "cls_s": False, "enc_s": True}
    # with the self-reconstruction ELBO term (routed per block), still nothing reaches E_v/E_t or the decoders
    moved = _sdcmr_step(_build("sdcmr", ds, {"alpha": 0.0, "eta": 0.0, "elbo_self_recon": True}), train)
    assert moved == {"enc_u": False, "dec": False, "cls_u": True, "cls_s": True, "enc_s": True}


def test_sdcmr_per_block_gradients_equal_each_equation():
    """The gradient each block receives is exactly its own equation's: E_t gets alpha dL_rec +
    eta dL_ind (Eq. 16), C^s gets gamma dL_ad (Eq. 19), E_s the whole of Eq. 15 (Eq. 20)."""
    ds, train, _ = _data()
    m = _build("sdcmr", ds)
    x, y = _sdcmr_batch(m, train)
    e_u, c_s, e_s = m.net.enc_u["text"][0][0].weight, m.net.cls_s[0].weight, m.net.enc_s.first["image"][0].weight
    captured = {}
    m.optimizers = {"net": torch.optim.SGD(m.net.parameters(), lr=0.0)}
    original = m.optimizers["net"].step
    m.optimizers["net"].step = lambda *a, **k: (captured.update({id(p): p.grad.clone() for p in (e_u, c_s, e_s)}), original())[1]
    m.noise = None
    m.losses = (lambda f: lambda x, y, noise, sample=True, parts=None, route=False: f(x, y, None, False, parts, route))(m.losses)
    m.step(Batch(x, y))

    def grad(select):
        p = {}
        objective, _ = m.losses(x, y, None, parts=p)
        return torch.autograd.grad(select(p, objective), [e_u, c_s, e_s], allow_unused=True)

    g_rec_ind = grad(lambda p, o: p["rec"] + p["ind"])[0]
    g_ad = grad(lambda p, o: p["ad"])[1]
    g_all = grad(lambda p, o: o)[2]
    torch.testing.assert_close(captured[id(e_u)], g_rec_ind)
    torch.testing.assert_close(captured[id(c_s)], g_ad)
    torch.testing.assert_close(captured[id(e_s)], g_all)
    # and E_t's gradient is not the full one (the KL and the reversed L_ad are left out)
    assert not torch.allclose(captured[id(e_u)], grad(lambda p, o: o)[0])


def test_sdcmr_sim_and_ind_on_posterior_means():
    ds, train, _ = _data()
    m = _build("sdcmr", ds, {"sim_ind_on": "means"})
    x, y = _sdcmr_batch(m, train)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        _, sampled = m.losses(x, y, g)
        _, means = m.losses(x, y, None, sample=False)
    assert sampled["L_sim"] == pytest.approx(means["L_sim"].item(), rel=1e-5)
    assert sampled["L_ind"] == pytest.approx(means["L_ind"].item(), rel=1e-5)
    assert sampled["L_rec"] != pytest.approx(means["L_rec"].item(), rel=1e-5)


def test_sdcmr_encodes_the_posterior_mean_of_z_s():
    ds, train, test = _data()
    m = _build("sdcmr", ds, {"iterations": 3})
    m.fit(train)
    with torch.no_grad():
        x = m.standardizer(to_tensor(test.text, "cpu"), "text")
        mu = m.net.enc_s(x, "text")[0].numpy()
    np.testing.assert_allclose(m.encode(test.text, "text"), mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m.encode(test.text, "text"), m.encode(test.text, "text"))


def test_sdcmr_literal_scale_switch():
    """literal_scale=true gives Eq. 7 summed over k dimensions and Eq. 14 without 1/N."""
    ds, train, _ = _data()
    m = _build("sdcmr", ds)
    lit = _build("sdcmr", ds, {"literal_scale": True})
    x, y = _sdcmr_batch(m, train, n=32)
    with torch.no_grad():
        _, row = m.losses(x, y, None, sample=False)
        _, row_lit = lit.losses(x, y, None, sample=False)
    k = int(m.config["k"])
    # the trainer keeps loss terms as 0-d tensors; pytest >= 9.2's approx cannot take those
    assert float(row_lit["L_sim"]) == pytest.approx(k * float(row["L_sim"]), rel=1e-5)
    assert float(row_lit["L_ind"]) == pytest.approx(32 * float(row["L_ind"]), rel=1e-5)


def test_sdcmr_cross_reconstruction_swaps_the_semantic_codes():
    """Eq. 9 (as read): D_v gets z^u_v with z^s_t and D_t gets z^u_t with z^s_v."""
    import torch.nn.functional as F

    ds, train, _ = _data()
    m = _build("sdcmr", ds, {"beta": 0.0, "gamma": 0.0, "eta": 0.0})
    x, y = _sdcmr_batch(m, train)
    with torch.no_grad():
        _, row = m.losses(x, y, None, sample=False)
        zu = {k: m.net.enc_u[k](x[k])[0] for k in x}
        zs = {k: m.net.enc_s(x[k], k)[0] for k in x}
        expected = F.mse_loss(m.net.dec["image"](torch.cat([zu["image"], zs["text"]], 1)), x["image"]) + \
            F.mse_loss(m.net.dec["text"](torch.cat([zu["text"], zs["image"]], 1)), x["text"])
    assert row["L_rec"] == pytest.approx(expected.item(), rel=1e-5)


# --- ACMR and P3S adversaries ------------------------------------------------------------------

def test_acmr_adversary_reaches_the_projectors(monkeypatch):
    import torch.nn.functional as F

    import cmr_bench.methods.acmr as acmr

    ds, train, _ = _data()
    m = _build("acmr", ds)
    m.adv_factor = 1.0
    v, t = to_tensor(train.image[:32], "cpu"), to_tensor(train.text[:32], "cpu")
    y = label_targets(train.labels[:32], m.num_classes, "cpu")
    proj = m.net.projector["image"][0].weight
    disc = m.net.modality_classifier[0].weight

    def grads():
        m.net.zero_grad(set_to_none=True)
        m.loss(Batch({"image": v, "text": t}, y))[0].backward()
        return proj.grad.clone(), disc.grad.clone()

    p_grl, d_grl = grads()
    monkeypatch.setattr(acmr, "grad_reverse", lambda z, weight=1.0: z)
    p_plain, d_plain = grads()
    m.net.zero_grad(set_to_none=True)
    F.cross_entropy(m.net.modality_classifier(m.net(v, "image")), torch.zeros(32, dtype=torch.long)).backward()
    g = proj.grad.clone()
    assert g.abs().sum() > 0
    # (a difference of two larger gradients: compare at the scale of g)
    torch.testing.assert_close(p_grl - p_plain, -2 * g, rtol=1e-3, atol=1e-3 * g.abs().max().item())
    torch.testing.assert_close(d_grl, d_plain)
    # the label classifier is trained (the official demo never updates it)
    m.net.zero_grad(set_to_none=True)
    m.loss(Batch({"image": v, "text": t}, y))[0].backward()
    assert m.net.label_classifier.weight.grad.abs().sum() > 0


def test_p3s_adversary_reaches_the_shared_encoder(monkeypatch):
    import cmr_bench.methods.p3s as p3s

    ds, train, _ = _data()
    m = _build("p3s", ds, {"rec": 0.0, "cls": 0.0, "orth": 0.0, "sim": 0.0})
    x = {"image": to_tensor(train.image[:32], "cpu"), "text": to_tensor(train.text[:32], "cpu")}
    y = label_targets(train.labels[:32], m.num_classes, "cpu")
    shared = m.net.shared.trunk[0][0].weight

    def grad():
        m.net.zero_grad(set_to_none=True)
        m.loss(Batch(x, y))[0].backward()
        return shared.grad.clone()

    with_grl = grad()
    monkeypatch.setattr(p3s, "grad_reverse", lambda z, weight=1.0: z)
    torch.testing.assert_close(with_grl, -grad(), rtol=1e-4, atol=1e-8)
    assert with_grl.abs().sum() > 0


# --- DSCMR model selection ---------------------------------------------------------------------

def test_dscmr_selects_the_best_validation_epoch():
    ds, train, _ = _data(noise=1.0)
    m = _build("dscmr", ds, {"epochs": 12})
    rows = np.arange(len(train))
    val = train.subset(rows[:60], "val")
    m.refit_after_selection = False  # the selected weights themselves
    log = m.fit(train.subset(rows[60:]), val)
    scores = [(r["val_map_i2t"] + r["val_map_t2i"]) / 2 for r in log]
    best = int(np.argmax(scores))
    assert log[-1]["selected_epoch"] == best + 1
    i2t, t2i = _maps(m, val)
    assert (i2t + t2i) / 2 == pytest.approx(scores[best], abs=1e-9)


def test_dscmr_without_validation_keeps_the_last_epoch():
    ds, train, _ = _data()
    m = _build("dscmr", ds, {"epochs": 2})
    log = m.fit(train, None)
    assert "val_map_i2t" not in log[0] and log[-1]["selected_epoch"] == 2


# --- shared blocks -----------------------------------------------------------------------------

def test_validation_map_matches_a_hand_computed_case():
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.1], [0.0, 1.0], [0.9, 0.2]])
    # ranking by cosine: item 0, item 2, item 1; relevant items 0 and 1 -> AP = (1/1 + 2/3) / 2
    assert cosine_map(q, g, np.array([0]), np.array([0, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)


def test_grad_reverse_and_kl():
    x = torch.ones(3, requires_grad=True)
    (_blocks.grad_reverse(x, 2.0) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-2.0, -4.0, -6.0]
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert _blocks.kl_standard_normal(mu, logvar).item() == 0.0
    assert _blocks.kl_standard_normal(mu + 1, logvar).item() == pytest.approx(4.0)


@pytest.mark.parametrize("name", NAMES)
def test_standardize_option_travels_with_the_state(name):
    ds, train, test = _data()
    quick = dict(FAST[name])
    for key in ("iterations", "epochs"):
        if key in quick:
            quick[key] = 2
    m = _build(name, ds, {**quick, "standardize": True})
    _fit(m, train)
    # every training row: a selecting method is refitted on train + validation (issue 26.2)
    np.testing.assert_allclose(m.standardizer.image_mean.numpy(), train.image.mean(0), rtol=1e-4, atol=1e-5)
    fresh = _build(name, ds, {**quick, "standardize": True}, seed=5)
    fresh.load_state_dict(m.state_dict())
    for mod in ("image", "text"):
        np.testing.assert_allclose(fresh.encode(test.features(mod), mod), m.encode(test.features(mod), mod), atol=1e-6)
    plain = _build(name, ds, {**quick, "standardize": False})
    _fit(plain, train)
    assert plain.standardizer.image_std.eq(1).all()  # identity unless asked for


def test_acmr_triplet_term_equals_the_sum_over_all_triplets():
    import torch.nn.functional as F

    from cmr_bench.methods.acmr import triplet_term

    def brute(anchor, other, s, margin, lam):
        dist = torch.cdist(anchor, other)
        hinge = F.relu(margin + dist.unsqueeze(2) - dist.unsqueeze(1))
        mask = s.unsqueeze(2) * (1 - s).unsqueeze(1)
        return ((dist.unsqueeze(2) + lam * hinge) * mask).sum() / mask.sum()

    g = torch.Generator().manual_seed(0)
    for multi in (False, True):
        a = torch.randn(30, 5, generator=g, requires_grad=True)
        o = torch.randn(30, 5, generator=g, requires_grad=True)
        y = (torch.rand(30, 4, generator=g) < 0.3).float() if multi else torch.eye(4)[torch.randint(0, 4, (30,), generator=g)]
        s = (y @ y.t() > 0).float()
        fast, slow = triplet_term(a, o, s, 0.4, 1.5), brute(a, o, s, 0.4, 1.5)
        assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
        for x, z in zip(torch.autograd.grad(fast, [a, o]), torch.autograd.grad(slow, [a, o])):
            torch.testing.assert_close(x, z, rtol=1e-4, atol=1e-6)
