"""Per-method checks of the cross-modal hashing plugins (SSAH, DJSRH, SDEH), beyond the generic
conformance test: code lengths, learning on an easy multi-label set, DJSRH never reading labels,
SSAH's adversarial gradient reaching the modality networks, and the variants changing the loss.
Small overrides keep every fit well under a second."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.data.types import Split
from cmr_bench.registry import all_methods, get_method
from cmr_bench.seeding import seed_everything

HASHING = ("ssah", "djsrh", "sdeh")

TINY = {
    "ssah": {
        "epochs": 1, "lab_passes": 2, "img_passes": 2, "txt_passes": 2, "dis_passes": 1,
        "lab_hidden": 64, "img_hidden": 64, "txt_hidden": 64, "semantic_dim": 32, "dis_hidden": 32,
        "batch_size": 64,
    },
    "djsrh": {"epochs": 3, "img_hidden": 64, "txt_hidden": 64},
    "sdeh": {"epochs": 3, "global_hidden": 32, "sem_dim": 32, "token_dim": 16, "tokens": 4, "heads": 2},
}

# Enough training to learn the easy set below (still ~1 s per fit on one core).
LEARN = {
    "ssah": {
        **TINY["ssah"], "epochs": 2, "lab_passes": 10, "img_passes": 10, "txt_passes": 10,
        "lr_lab": 3e-3, "lr_img": 3e-3, "lr_txt": 3e-3,
    },
    "sdeh": {**TINY["sdeh"], "epochs": 20},
    "djsrh": {**TINY["djsrh"], "epochs": 15},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def multi():
    return make_synthetic(n_train=240, n_test=80, image_dim=24, text_dim=12, num_classes=5, multilabel=True, seed=3)


@pytest.fixture(scope="module")
def easy():
    """An easy multi-label set: little noise, so a supervised method should do clearly better than chance."""
    return make_synthetic(n_train=300, n_test=100, image_dim=24, text_dim=12, num_classes=10, multilabel=True, noise=0.3, seed=7)


def build(name, ds, bits=16, overrides=None, seed=0, label_kind=None):
    cls = get_method(name)
    seed_everything(seed)
    train = ds.split("train")
    return cls(
        image_dim=train.image.shape[1],
        text_dim=train.text.shape[1],
        num_classes=ds.num_classes,
        label_kind=label_kind or ds.label_kind,
        config=cls.resolve_config(overrides if overrides is not None else TINY[name]),
        bits=bits,
        device="cpu",
        seed=seed,
    )


def hamming_map(q_codes, r_codes, q_labels, r_labels):
    """mAP@all of Hamming ranking; relevant = shares >= 1 label (ties broken by index)."""
    k = q_codes.shape[1]
    dist = 0.5 * (k - q_codes @ r_codes.T)
    rel_all = (q_labels @ r_labels.T) > 0
    aps = []
    for i in range(len(q_codes)):
        order = np.argsort(dist[i], kind="stable")
        rel = rel_all[i, order]
        if not rel.any():
            continue
        hits = np.cumsum(rel)[rel]
        aps.append(np.mean(hits / (np.flatnonzero(rel) + 1)))
    return float(np.mean(aps))


def test_registered_as_binary_methods():
    methods = all_methods()
    for name in HASHING:
        cls = methods[name]
        assert cls.code_type == "binary"
        assert cls.info.deviations, name
        for variant, overrides in cls.variants.items():
            assert set(overrides) <= set(cls.defaults), (name, variant)
        for dataset, overrides in cls.dataset_defaults.items():
            assert set(overrides) <= set(cls.defaults), (name, dataset)
    assert methods["djsrh"].info.supervision == "unsupervised"
    assert methods["ssah"].info.supervision == methods["sdeh"].info.supervision == "supervised"
    assert methods["sdeh"].info.status == "re-implementation"


@pytest.mark.parametrize("name", HASHING)
@pytest.mark.parametrize("bits", [16, 32, 64, 128])
def test_code_length(name, bits, multi):
    overrides = dict(TINY[name], epochs=1)
    if name == "ssah":
        overrides.update(lab_passes=1, img_passes=1, txt_passes=1)
    m = build(name, multi, bits=bits, overrides=overrides)
    log = m.fit(multi.split("train"))
    assert log and all(np.isfinite(v) for rec in log for v in rec.values())
    test = multi.split("test")
    for modality in ("image", "text"):
        codes = m.encode(test.features(modality), modality)
        assert codes.shape == (len(test), bits) and codes.dtype == np.float32
        assert set(np.unique(codes)) <= {-1.0, 1.0}


@pytest.mark.parametrize("name", HASHING)
def test_single_label_input(name):
    ds = make_synthetic(n_train=120, n_test=40, image_dim=16, text_dim=8, num_classes=4, multilabel=False, seed=1)
    m = build(name, ds, overrides=dict(TINY[name], epochs=1))
    m.fit(ds.split("train"))
    assert m.encode(ds.split("test").image, "image").shape == (40, 16)


@pytest.mark.parametrize("name", ["ssah", "sdeh"])
def test_supervised_methods_beat_random_codes(name, easy):
    train, test = easy.split("train"), easy.split("test")
    m = build(name, easy, bits=32, overrides=LEARN[name])
    m.fit(train)
    qi, qt = m.encode(test.image, "image"), m.encode(test.text, "text")
    ri, rt = m.encode(train.image, "image"), m.encode(train.text, "text")
    rng = np.random.default_rng(0)
    chance = np.mean(
        [hamming_map(np.sign(rng.standard_normal(qi.shape)), np.sign(rng.standard_normal(ri.shape)), test.labels, train.labels) for _ in range(3)]
    )
    i2t = hamming_map(qi, rt, test.labels, train.labels)
    t2i = hamming_map(qt, ri, test.labels, train.labels)
    assert i2t > chance + 0.1 and t2i > chance + 0.1, (i2t, t2i, chance)


def test_djsrh_beats_random_codes(easy):
    train, test = easy.split("train"), easy.split("test")
    m = build("djsrh", easy, bits=32, overrides=LEARN["djsrh"])
    m.fit(train)
    rng = np.random.default_rng(0)
    qi = m.encode(test.image, "image")
    chance = hamming_map(np.sign(rng.standard_normal(qi.shape)), np.sign(rng.standard_normal((len(train), 32))), test.labels, train.labels)
    i2t = hamming_map(qi, m.encode(train.text, "text"), test.labels, train.labels)
    assert i2t > chance + 0.03, (i2t, chance)


# --- DJSRH is unsupervised -------------------------------------------------------------------


class _NoLabels:
    """A training split whose labels must not be touched."""

    def __init__(self, split: Split):
        self.name, self.image, self.text, self.indices = split.name, split.image, split.text, split.indices

    def __len__(self):
        return len(self.image)

    @property
    def labels(self):
        raise AssertionError("DJSRH read train.labels")

    @property
    def multilabel(self):
        raise AssertionError("DJSRH read train.labels")

    def features(self, modality):
        return self.image if modality == "image" else self.text


def test_djsrh_ignores_labels(multi):
    train, test = multi.split("train"), multi.split("test")
    garbage = Split("train", train.image, train.text, np.zeros_like(train.labels), train.indices)
    shuffled = Split("train", train.image, train.text, train.labels[::-1].copy(), train.indices)
    codes = []
    for split in (train, garbage, shuffled, _NoLabels(train)):
        m = build("djsrh", multi)
        m.fit(split)
        codes.append((m.encode(test.image, "image"), m.encode(test.text, "text")))
    for other in codes[1:]:
        assert np.array_equal(codes[0][0], other[0]) and np.array_equal(codes[0][1], other[1])


# --- SSAH: the adversarial terms reach ImgNet and TxtNet ---------------------------------------


@pytest.mark.parametrize("mode", ["fool", "minimax"])
def test_ssah_adversarial_term_sends_gradient_to_modality_networks(mode, multi):
    m = build("ssah", multi, overrides=dict(TINY["ssah"], adv_generator_loss=mode))
    train = multi.split("train")
    x_img, x_txt = m.prepare(train).x.values()
    for key, modality, x in (("img", "image", x_img), ("txt", "text", x_txt)):
        m.net.zero_grad()
        feature = m.net[key](x[:32])[1]
        m.adversarial_generator_loss(modality, feature).backward()
        grads = [p.grad for p in m.net[key].parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, (key, mode)
        assert all(torch.isfinite(g).all() for g in grads)
        assert all(p.grad is None for p in m.net["lab"].parameters())


def test_ssah_minimax_reverses_the_discriminator_gradient(multi):
    """'minimax' hands the modality features minus the gradient of the discriminator's loss."""
    m = build("ssah", multi, overrides=dict(TINY["ssah"], adv_generator_loss="minimax"))
    feature = torch.rand(16, m.config["semantic_dim"], requires_grad=True)
    m.adversarial_generator_loss("image", feature).backward()
    g_gen = feature.grad.clone()
    feature.grad = None
    logits = m.net["dis_img"](feature).squeeze(1)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="sum").backward()
    assert torch.allclose(g_gen, -feature.grad)


def test_ssah_adversarial_weight_changes_training(multi):
    """Same seed, same batches: only the adversarial gradient (delta) differs, so ImgNet ends
    elsewhere; with delta = 0 (the official code's effective behaviour) it would not."""
    train, test = multi.split("train"), multi.split("test")
    relaxed = {}
    for delta in (0.0, 1.0, 0.0):
        m = build("ssah", multi, overrides=dict(TINY["ssah"], delta=delta))
        log = m.fit(train)
        assert ("img_adv" in log[-1]) == bool(delta)
        relaxed.setdefault(delta, []).append(m.relaxed(test.image, "image"))
    assert np.array_equal(relaxed[0.0][0], relaxed[0.0][1])
    assert not np.allclose(relaxed[0.0][0], relaxed[1.0][0])


# --- variants change the loss terms ------------------------------------------------------------


def _djsrh_with(variant, ds, dataset="wiki"):
    """DJSRH with a Table 1 variant; "DJSRH" is the full model (no overrides)."""
    cls = get_method("djsrh")
    overrides = dict(TINY["djsrh"], **cls.variants.get(variant, {}))
    config = cls.resolve_config(overrides, dataset=dataset)
    train = ds.split("train")
    return cls(image_dim=train.image.shape[1], text_dim=train.text.shape[1], num_classes=ds.num_classes,
               label_kind=ds.label_kind, config=config, bits=16, seed=0)


def test_djsrh_variants_change_the_affinity_and_loss(multi):
    from cmr_bench.methods.djsrh import cosine_affinity

    cls = get_method("djsrh")
    assert set(cls.variants) == {"DJSRH-1", "DJSRH-2", "DJSRH-3", "DJSRH-4", "DJSRH-5", "DJSRH-6"}
    train = multi.split("train")
    img, txt = torch.as_tensor(np.abs(train.image[:32])), torch.as_tensor(np.abs(train.text[:32]))
    s = {v: _djsrh_with(v, multi).target_affinity(img, txt) for v in [*cls.variants, "DJSRH"]}
    assert torch.allclose(s["DJSRH-1"], cosine_affinity(img, True))  # S = S_I
    assert torch.allclose(s["DJSRH-2"], cosine_affinity(txt, True))  # S = S_T
    beta = cls.dataset_defaults["wiki"]["beta"]
    assert torch.allclose(s["DJSRH-3"], beta * s["DJSRH-1"] + (1 - beta) * s["DJSRH-2"])
    assert not torch.allclose(s["DJSRH-4"], s["DJSRH-3"])  # + eta (second-order term)
    assert torch.allclose(s["DJSRH-5"], 1.5 * s["DJSRH-4"])  # + mu
    assert torch.allclose(s["DJSRH"], s["DJSRH-5"]) and torch.allclose(s["DJSRH-6"], s["DJSRH"])

    codes_i, codes_t = torch.tanh(torch.randn(32, 16)), torch.tanh(torch.randn(32, 16))
    full = _djsrh_with("DJSRH", multi).loss_terms(codes_i, codes_t, s["DJSRH"])
    five = _djsrh_with("DJSRH-5", multi).loss_terms(codes_i, codes_t, s["DJSRH"])
    assert torch.allclose(five["total"], five["cross"])  # lambda1 = lambda2 = 0
    lam = cls.dataset_defaults["wiki"]["lambda1"]
    assert torch.allclose(full["total"], full["cross"] + lam * full["img_img"] + lam * full["txt_txt"])


def test_djsrh_6_keeps_alpha_at_one(multi):
    train = multi.split("train")
    full = _djsrh_with("DJSRH", multi).fit(train)
    six = _djsrh_with("DJSRH-6", multi).fit(train)
    assert [r["alpha"] for r in six] == [1.0] * len(six)
    assert [r["alpha"] for r in full] == pytest.approx([np.sqrt(e + 1) for e in range(len(full))])


def test_sdeh_variants_change_the_loss(multi):
    cls = get_method("sdeh")
    train = multi.split("train")
    totals = {}
    for variant in [None, *cls.variants]:
        overrides = dict(TINY["sdeh"], **(cls.variants[variant] if variant else {}))
        m = build("sdeh", multi, overrides=overrides)
        inputs = m.prepare(train)
        x_img, x_txt, y = inputs.x["image"], inputs.x["text"], inputs.y
        with torch.no_grad():
            totals[variant] = m.loss_terms(x_img[:64], x_txt[:64], y[:64])
    base = totals[None]
    for variant in cls.variants:
        assert not torch.allclose(totals[variant]["total"], base["total"]), variant
    assert not torch.allclose(totals["binary similarity"]["sim"], base["sim"])  # graded vs binary S
    assert torch.allclose(totals["w/o L_sem"]["total"], base["total"] - base["sem"])


def test_ssah_variants(multi):
    cls = get_method("ssah")
    assert cls.resolve_config(cls.variants["no adversarial gradient"])["delta"] == 0.0
    m = build("ssah", multi, overrides=dict(TINY["ssah"], **cls.variants["minimax adversarial"]))
    assert m.config["adv_generator_loss"] == "minimax"
    assert cls.resolve_config(cls.variants["plain sums"])["pair_norm"] == "sum"
    assert cls.defaults["pair_norm"] == "balanced"
    assert cls.resolve_config(cls.variants["paper theta"])["hash_theta_bits"] == 0
    assert cls.defaults["hash_theta_bits"] == 16
    # chosen on validation with the balanced pairs and scaled theta
    assert (cls.defaults["lr_lab"], cls.defaults["lr_img"], cls.defaults["lr_txt"]) == (3e-4, 3e-3, 3e-3)


# --- the raw-image seam ------------------------------------------------------------------------


@pytest.mark.parametrize("name", HASHING)
def test_image_backbone_is_features_only_for_now(name, multi):
    from cmr_bench.hparams import HyperparameterError

    build(name, multi, overrides=dict(TINY[name], image_backbone="features"))
    with pytest.raises(HyperparameterError, match="image_backbone = 'cnn-f': expected one of features"):
        build(name, multi, overrides=dict(TINY[name], image_backbone="cnn-f"))


# --- SSAH's label network on single-label data (issue: dying semantic units, colliding codes) ---

def _ssah_label_network(bits, pair_norm=None):
    """LabNet alone (its stage of the outer iteration; the modality stages switched off) at the
    default widths (label -> 4096 -> 512) on single-label data with 10 classes, ~10% similar pairs."""
    ds = make_synthetic(n_train=600, n_test=40, image_dim=16, text_dim=8, num_classes=10, multilabel=False, seed=5)
    over = {"epochs": 2, "img_passes": 0, "txt_passes": 0, "dis_passes": 0, "img_hidden": 16, "txt_hidden": 16}
    if pair_norm:
        over["pair_norm"] = pair_norm
    m = build("ssah", ds, bits=bits, overrides=over)
    return m.fit(ds.split("train"))[-1]


@pytest.mark.parametrize("bits", [64, 128])
def test_ssah_class_codes_stay_distinct_on_single_label_data(bits):
    """Every class keeps its own code (10 distinct codes, minimum Hamming distance well above 0)
    and some live semantic units (with the paper's plain sums whole classes end with all-zero
    features here, and share a code from 64 bits); the training log records both. About 70% of
    the 512 units die under the default lr_lab=3e-4 (at 1e-3 ~95%, and at 128 bits a class lost
    all of them here)."""
    row = _ssah_label_network(bits)
    assert row["class_codes_distinct"] == 10
    assert row["min_class_hamming"] >= bits / 8
    assert row["lab_zero_rows"] == 0
    assert 0.0 <= row["lab_dead_frac"] < 1.0


def test_ssah_balanced_pairs_split_the_total_weight_in_halves(multi):
    """pair_norm=balanced: similar and dissimilar pairs carry half of the (count-weighted) total
    each; the total equals the plain sum's, so the term's scale is unchanged."""
    m = build("ssah", multi, bits=8)
    n, b = 6, 4
    s = torch.tensor([[1, 0, 0, 0]] * 2 + [[0, 1, 0, 0]] * 4, dtype=torch.float32)  # 4 of 24 similar
    row_w, col_w = torch.ones(n), torch.ones(b)
    stored_f, stored_h = torch.zeros(n, 5), torch.zeros(n, 8)  # theta = 0: every pair costs ln 2
    out = (torch.zeros(b, 8), torch.zeros(b, 5), torch.zeros(b, 3))
    _, parts = m._semantic_losses(out, torch.zeros(b, 3), stored_f, stored_h, s, row_w, col_w)
    assert float(parts["pair_feat"]) == pytest.approx(24 * np.log(2), rel=1e-6)
    # only the similar pairs cost something: they carry half the total weight (12 pairs' worth)
    stored_f = torch.ones(n, 5)
    out = (torch.zeros(b, 8), torch.full((b, 5), 40.0), torch.zeros(b, 3))  # theta = 100
    _, parts = m._semantic_losses(out, torch.zeros(b, 3), stored_f, stored_h, 1 - s, row_w, col_w)
    # now 20 similar pairs (cost ~0) and 4 dissimilar ones (cost ~theta each) weigh 12 / 4 = 3 each
    assert float(parts["pair_feat"]) == pytest.approx(12 * 100.0, rel=1e-4)


def test_ssah_hash_likelihood_scores_every_length_like_a_16_bit_code(multi):
    """hash_theta_bits=16 (default): theta = 1/2 (16/K) H^T H', so two equal 128-bit codes have
    theta = 8, as two equal 16-bit codes (the paper's 1/2 H^T H gives 64 and saturates the
    likelihood of long codes), and the term is multiplied by K/16 (the paper's gradient near
    theta = 0); at 16 bits the default is the paper's term."""
    n, b = 6, 4
    s = torch.zeros(n, b)  # dissimilar pairs cost softplus(theta) each
    for bits in (16, 128):
        plain = dict(TINY["ssah"], pair_norm="sum")  # unweighted pairs: the cost is n * b * softplus(theta)
        m = build("ssah", multi, bits=bits, overrides=plain)
        paper = build("ssah", multi, bits=bits, overrides=dict(plain, **get_method("ssah").variants["paper theta"]))
        args = ((torch.ones(b, bits), torch.zeros(b, 5), torch.zeros(b, 3)), torch.zeros(b, 3), torch.zeros(n, 5),
                torch.ones(n, bits), s, torch.ones(n), torch.ones(b))
        softplus = lambda t: float(torch.nn.functional.softplus(torch.tensor(t)))  # noqa: E731
        got = float(m._semantic_losses(*args)[1]["pair_hash"])
        assert got == pytest.approx(bits / 16 * n * b * softplus(8.0), rel=1e-5)
        assert float(paper._semantic_losses(*args)[1]["pair_hash"]) == pytest.approx(n * b * softplus(bits / 2), rel=1e-5)


def test_ssah_scaled_hash_likelihood_keeps_the_papers_gradient_at_zero(multi):
    """Near theta = 0 the default's hash term pulls each output bit as hard as the paper's at every
    length (without the K/16 factor it would pull 8x more weakly at 128 bits and the quantisation
    term would fix the signs first)."""
    torch.manual_seed(0)
    n, b, bits = 6, 4, 128
    stored = torch.sign(torch.randn(n, bits)) * 1e-3  # theta ~ 0 for every pair
    s = (torch.rand(n, b) < 0.5).float()
    grads = []
    for extra in ({}, get_method("ssah").variants["paper theta"]):
        m = build("ssah", multi, bits=bits, overrides=dict(TINY["ssah"], pair_norm="sum", **extra))
        h = torch.zeros(b, bits, requires_grad=True)
        out = (h, torch.zeros(b, 5), torch.zeros(b, 3))
        m._semantic_losses(out, torch.zeros(b, 3), torch.zeros(n, 5), stored, s, torch.ones(n), torch.ones(b))[1]["pair_hash"].backward()
        grads.append(h.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-9)


def test_djsrh_trains_the_official_200_epochs_on_wiki():
    cls = get_method("djsrh")
    assert cls.resolve_config({}, dataset="wiki")["epochs"] == 200  # official settings.py for WIKI
    assert not any("Fewer epochs" in d for d in cls.info.deviations)
