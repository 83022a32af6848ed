"""Table II's deep rows (issue 13): each plugin's math pinned on tiny inputs, plus the
registry's conformance checks on multi-label data (the registry-wide test runs single-label)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmr_bench.conformance import run_checks
from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.registry import all_methods, get_method
from cmr_bench.trainer import Batch

DEEP_ROWS = ("corr-ae", "cmdn", "deep-sm", "mcsm", "cm-gan", "tanss", "caal")


def _make(name: str, multilabel: bool = False, **overrides):
    ds = make_synthetic(n_train=48, n_test=16, image_dim=10, text_dim=6, num_classes=3, multilabel=multilabel, seed=3)
    cls = get_method(name)
    config = cls.resolve_config({**cls.smoke_config, **overrides})
    m = cls.create(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes, label_kind=ds.label_kind,
                   config=config, seed=0)
    return m, ds


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(v.detach(), before[k])}


@pytest.mark.parametrize("name", DEEP_ROWS)
def test_registered_with_metadata(name):
    cls = all_methods()[name]
    # issue 26.3: approximations from the abstract and re-implementations that drop major parts say so
    expected = {"caal": "from abstract", "mcsm": "partial", "cm-gan": "partial", "tanss": "partial"}
    assert cls.info.status == expected.get(name, "re-implementation") and cls.info.deviations
    assert cls.smoke_config and all(k in cls.defaults for k in cls.smoke_config)


@pytest.mark.parametrize("name", DEEP_ROWS)
def test_conformance_multilabel(name):
    failed = [f"{r.name}: {r.detail}" for r in run_checks(all_methods()[name], device="cpu", multilabel=True) if not r.ok]
    assert not failed, "\n".join(failed)


# --- Corr-AE ---------------------------------------------------------------------------------

def test_corr_ae_loss_by_hand():
    from cmr_bench.methods.corr_ae import correspondence_loss

    ci = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ct = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    xi = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    xt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    dec_i = lambda c: 2 * c  # noqa: E731
    dec_t = lambda c: c + 1  # noqa: E731
    alpha = 0.25
    # L_C = mean(||(1,0)||^2, ||(-1,1)||^2) = (1 + 2) / 2
    l_c = 1.5
    # corr: ||xi - 2 ci||^2 = ||(-1,1)||^2, ||(2,-4)||^2 -> (2 + 20)/2 = 11; ||xt - (ct+1)||^2 = ||(-1,0)||^2, ||(-1,-2)||^2 -> 3
    t = correspondence_loss(ci, ct, xi, xt, dec_i, dec_t, alpha, "corr")
    assert t["L_C"].item() == pytest.approx(l_c)
    assert t["L_I"].item() == pytest.approx(11.0) and t["L_T"].item() == pytest.approx(3.0)
    assert t["L"].item() == pytest.approx(0.75 * 14.0 + 0.25 * 1.5)
    # cross: ||xi - 2 ct||^2 = ||(1,1)||^2, ||(0,-2)||^2 -> 3; ||xt - (ci+1)||^2 = ||(-2,0)||^2, ||(0,-3)||^2 -> 6.5
    t = correspondence_loss(ci, ct, xi, xt, dec_i, dec_t, alpha, "cross")
    assert t["L_I"].item() == pytest.approx(3.0) and t["L_T"].item() == pytest.approx(6.5)
    # full: both codes reconstruct both inputs
    t = correspondence_loss(ci, ct, xi, xt, dec_i, dec_t, alpha, "full")
    assert t["L_I"].item() == pytest.approx(11.0 + 3.0) and t["L_T"].item() == pytest.approx(3.0 + 6.5)
    with pytest.raises(ValueError):
        correspondence_loss(ci, ct, xi, xt, dec_i, dec_t, alpha, "half")


def test_corr_ae_variants_and_unsupervised():
    cls = get_method("corr-ae")
    assert {v["variant"] for v in cls.variants.values()} == {"cross", "full"}
    assert cls.info.supervision == "unsupervised" and not cls.uses_validation
    m, ds = _make("corr-ae")
    train = ds.splits["train"]
    # labels are never read: permuting them leaves the codes unchanged
    import dataclasses

    shuffled = dataclasses.replace(train, labels=np.roll(train.labels, 5))
    m.fit(train)
    m2, _ = _make("corr-ae")
    m2.fit(shuffled)
    test = ds.splits["test"]
    assert np.array_equal(m.encode(test.image, "image"), m2.encode(test.image, "image"))


# --- CM-GAN ----------------------------------------------------------------------------------

def test_cm_gan_weight_sharing():
    m, ds = _make("cm-gan")
    net = m.net
    x = {"image": torch.randn(5, ds.image_dim), "text": torch.randn(5, ds.text_dim)}
    # one shared encoder top layer and one shared decoder bottom layer serve both pathways
    for modality in ("image", "text"):
        net.zero_grad()
        code = net(x[modality], modality)
        net.decode(code, modality).sum().backward()
        assert net.enc_shared.weight.grad is not None and net.enc_shared.weight.grad.abs().sum() > 0
        assert net.dec_shared[0].weight.grad is not None and net.dec_shared[0].weight.grad.abs().sum() > 0
        other = "text" if modality == "image" else "image"
        assert net.enc_first[other][0].weight.grad is None  # the specific layers stay apart
    # perturbing the one shared layer moves both modalities' common representations
    before = {mod: net(x[mod], mod).detach() for mod in x}
    with torch.no_grad():
        net.enc_shared.bias.add_(1.0)
    for mod in x:
        assert torch.allclose(net(x[mod], mod).detach(), before[mod] + 1.0, atol=1e-5)
    # the optimisers split the parameters into generator and discriminator sides, disjointly
    opts = m.make_optimizers()
    gen = {id(p) for g in opts["gen"].param_groups for p in g["params"]}
    disc = {id(p) for g in opts["disc"].param_groups for p in g["params"]}
    assert not gen & disc and gen | disc == {id(p) for p in net.parameters()}


def test_cm_gan_alternating_step_updates_both_sides():
    m, ds = _make("cm-gan")
    train = ds.splits["train"]
    m.inputs = m.prepare(train)
    m.optimizers = m.make_optimizers()
    before = _params(m.net)
    m.step(Batch.rows(m.inputs, torch.arange(16)))
    changed = _changed(before, m.net)
    assert any(k.startswith("d_intra") for k in changed) and any(k.startswith("d_inter") for k in changed)
    assert any(k.startswith("enc_shared") for k in changed) and any(k.startswith("classifier") for k in changed)


# --- TANSS -----------------------------------------------------------------------------------

def test_tanss_three_branches():
    m, ds = _make("tanss")
    net = m.net
    assert set(net.branch) == {"image", "text"} and net.semantic is not None
    train = ds.splits["train"]
    m.inputs = m.prepare(train)
    m.optimizers = m.make_optimizers()
    before = _params(net)
    m.step(Batch.rows(m.inputs, torch.arange(16)))
    changed = _changed(before, net)
    for prefix in ("semantic.", "branch.image.", "branch.text.", "disc.image.", "disc.text.", "classifier."):
        assert any(k.startswith(prefix) for k in changed), prefix
    # retrieval codes come from the modality branches only: the semantic branch is training-only
    x = torch.randn(4, ds.image_dim)
    code = m.encoder("image")(x).detach()
    with torch.no_grad():
        for p in net.semantic.parameters():
            p.add_(1.0)
    assert torch.equal(m.encoder("image")(x).detach(), code)


def test_tanss_modal_step_aligns_to_semantic_branch():
    """Step 3's alignment term is the distance of each modality branch's output to the semantic
    branch's output for the item's label (after the semantic branch's own update in step 1)."""
    import copy

    m, ds = _make("tanss")
    net = m.net
    m.inputs = m.prepare(ds.splits["train"])
    m.optimizers = m.make_optimizers()
    batch = Batch.rows(m.inputs, torch.arange(16))
    branches_before = copy.deepcopy(net.branch.state_dict())
    row = m.step(batch)
    with torch.no_grad():
        s = net.semantic(batch.y)  # the semantic branch is stepped only in step 1
        net.branch.load_state_dict(branches_before)  # the modality branches are stepped only in step 3
        expected = sum(F.mse_loss(net(batch.x[mod], mod), s) for mod in ("image", "text"))
    assert row["L_align"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- MCSM ------------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [0.5, 0.8])
def test_mcsm_fused_similarity(w):
    m, ds = _make("mcsm", fusion_weight=w)
    net = m.net
    xi, xt = torch.randn(4, ds.image_dim), torch.randn(3, ds.text_dim)
    with torch.no_grad():
        code_i, code_t = net(xi, "image"), net(xt, "text")
        fused = F.normalize(code_i, dim=1) @ F.normalize(code_t, dim=1).t()
        cos = lambda a, b: F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()  # noqa: E731
        s_img = cos(net.branch["image"]["image"](xi), net.branch["image"]["text"](xt))
        s_txt = cos(net.branch["text"]["image"](xi), net.branch["text"]["text"](xt))
    assert torch.allclose(fused, w * s_img + (1 - w) * s_txt, atol=1e-6)


def test_mcsm_ranking_loss_by_hand():
    from cmr_bench.methods.mcsm import ranking_loss

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos: s00 = 1, s01 = 1/sqrt2, s10 = 0, s11 = 1/sqrt2; negatives (0,1), (1,0); margin 0.5
    r2 = 1 / np.sqrt(2)
    c01 = max(0, 0.5 - 1 + r2) + max(0, 0.5 - r2 + r2)
    c10 = max(0, 0.5 - r2 + 0) + max(0, 0.5 - 1 + 0)
    assert ranking_loss(a, b, y, 0.5).item() == pytest.approx((c01 + c10) / 2, abs=1e-6)


def test_mcsm_pretraining_stage_uses_own_modality_only():
    m, ds = _make("mcsm", pretrain_epochs=5)
    m.inputs = m.prepare(ds.splits["train"])
    m.optimizers = m.make_optimizers()
    m.done = 0
    before = _params(m.net)
    row = m.step(Batch.rows(m.inputs, torch.arange(16)))
    changed = _changed(before, m.net)
    assert row["L_rank"].item() == 0.0
    assert any(k.startswith("branch.image.image") for k in changed) and any(k.startswith("branch.text.text") for k in changed)
    assert not any(k.startswith(("branch.image.text", "branch.text.image")) for k in changed)


# --- Deep-SM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("multilabel", [False, True])
def test_deep_sm_codes_are_label_probabilities(multilabel):
    m, ds = _make("deep-sm", multilabel=multilabel)
    m.fit(ds.splits["train"], ds.splits["test"].subset(np.arange(6), "val"))
    codes = m.encode(ds.splits["test"].image, "image")
    assert codes.shape[1] == ds.num_classes and (codes >= 0).all() and (codes <= 1).all()
    if not multilabel:
        assert np.allclose(codes.sum(1), 1.0, atol=1e-5)
    with pytest.raises(Exception):
        _make("deep-sm", backbone="vgg19")


# --- CAAL ------------------------------------------------------------------------------------

def test_caal_category_alignment_by_hand():
    from cmr_bench.methods.caal import category_alignment

    ci = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    ct = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # class 2 absent
    # class 0 means: (2, 0) vs (0.5, 0) -> 2.25; class 1: (0, 2) vs (0, 0) -> 4; mean over present classes
    assert category_alignment(ci, ct, y).item() == pytest.approx((2.25 + 4.0) / 2)


def test_caal_generators_are_conditioned_on_the_label():
    m, ds = _make("caal")
    net = m.net
    z = torch.zeros(2, net.noise)
    y = torch.eye(ds.num_classes)[:2]
    fake = net.gen["image"](torch.cat([z, y], 1))
    assert fake.shape == (2, ds.image_dim) and not torch.allclose(fake[0], fake[1])


# --- CMDN ------------------------------------------------------------------------------------

def test_cmdn_stages_train_their_own_networks():
    m, ds = _make("cmdn", epochs=2, stage1_epochs=2)  # stage 1 only
    before = _params(m.net)
    m.fit(ds.splits["train"])
    changed = _changed(before, m.net)
    assert any(k.startswith("intra") for k in changed) and any(k.startswith("inter") for k in changed)
    assert not any(k.startswith("level") for k in changed)

    m, ds = _make("cmdn", epochs=2, stage1_epochs=0)  # stage 2 only: stage-1 networks fixed
    before = _params(m.net)
    log = m.fit(ds.splits["train"])
    changed = _changed(before, m.net)
    assert not any(k.startswith(("intra", "inter")) for k in changed)
    assert any(k.startswith("level1") for k in changed) and any(k.startswith("level2") for k in changed)
    assert [row["stage"] for row in log] == [2.0, 2.0]


def test_cmdn_trains_with_labels_as_its_official_configuration_and_without_on_request():
    import dataclasses

    from cmr_bench.methods.cmdn import stage1_loss

    cls = get_method("cmdn")
    assert cls.defaults["labels"] is True and cls.info.supervision == "supervised"
    m, ds = _make("cmdn")
    x = {"image": torch.randn(4, ds.image_dim), "text": torch.randn(4, ds.text_dim)}
    y = torch.eye(ds.num_classes)[torch.tensor([0, 1, 2, 0])]
    terms = stage1_loss(m.net, x, y)
    assert terms["L_label"].item() > 0 and terms["L_stage1"].item() == pytest.approx(
        (terms["L_intra"] + terms["L_inter"] + terms["L_label"]).item(), rel=1e-6)
    train, test = ds.splits["train"], ds.splits["test"]
    shuffled = dataclasses.replace(train, labels=np.roll(train.labels, 5))
    codes = []
    for labels in (True, False):
        for split in (train, shuffled):
            m, _ = _make("cmdn", labels=labels)
            m.fit(split)
            codes.append(m.encode(test.image, "image"))
    assert not np.array_equal(codes[0], codes[1])  # labelled: the labels shape the codes
    assert np.array_equal(codes[2], codes[3])  # variant "unsupervised": labels never read
    assert cls.variants["unsupervised"] == {"labels": False}


def test_cmdn_inter_network_reconstructs_both_modalities():
    from cmr_bench.methods.cmdn import stage1_loss

    m, ds = _make("cmdn")
    net = m.net
    x = {"image": torch.randn(4, ds.image_dim), "text": torch.randn(4, ds.text_dim)}
    terms = stage1_loss(net, x)
    sq = lambda a, b: (a - b).pow(2).sum(1).mean()  # noqa: E731
    expected = sum(sq(net.inter_dec[t](net.inter_enc[s](x[s])), x[t]) for s in x for t in x)
    assert terms["L_inter"].item() == pytest.approx(expected.item(), rel=1e-6)


# --- shared pieces, schedule record, grid benchmark ------------------------------------------

@pytest.mark.parametrize("name, sides", [
    ("cm-gan", {"gen": "lr", "disc": "lr_disc"}),
    ("caal", {"gen": "lr", "disc": "lr_disc"}),
    ("tanss", {"semantic": "lr", "disc": "lr_disc", "modal": "lr"}),
])
def test_adversarial_optimizers_split_parameters_and_rates(name, sides):
    m, _ = _make(name, lr=3e-4, lr_disc=7e-5, betas=[0.4, 0.99])
    opts = m.make_optimizers()
    assert set(opts) == set(sides)
    seen = []
    for side, key in sides.items():
        for group in opts[side].param_groups:
            assert group["lr"] == pytest.approx(float(m.config[key])) and tuple(group["betas"]) == (0.4, 0.99)
            seen += [id(p) for p in group["params"]]
    # every parameter is stepped by exactly one side
    assert len(seen) == len(set(seen)) and set(seen) == {id(p) for p in m.net.parameters()}


@pytest.mark.parametrize("name", DEEP_ROWS)
def test_schedule_deviation_names_the_default(name):
    """The default schedule is a recorded choice: the deviations name its length and say it was
    compared on the validation split (so changing the default without the record fails here)."""
    cls = all_methods()[name]
    schedule = [d for d in cls.info.deviations if f"{cls.defaults['epochs']} epochs" in d]
    assert schedule and any("validation" in d for d in schedule), cls.info.deviations


def _grid_bench(monkeypatch, only: str | None):
    import importlib.util
    from pathlib import Path

    if only is None:
        monkeypatch.delenv("CMR_BENCH_GRID_METHODS", raising=False)
    else:
        monkeypatch.setenv("CMR_BENCH_GRID_METHODS", only)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_wiki_grid.py"
    spec = importlib.util.spec_from_file_location("bench_wiki_grid_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_benchmark_covers_the_deep_rows(monkeypatch):
    assert set(DEEP_ROWS) <= set(_grid_bench(monkeypatch, None).METHODS)
    assert set(_grid_bench(monkeypatch, "cmdn,tanss").METHODS) == {"cmdn", "tanss"}
    with pytest.raises(ValueError, match="nosuch"):
        _grid_bench(monkeypatch, "cmdn,nosuch")
