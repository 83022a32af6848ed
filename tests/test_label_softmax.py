"""label-softmax, the classifier reference row: per-modality classifiers, codes = class
probabilities (softmax; sigmoids for multi-label data), compared by cosine."""

import numpy as np
import pytest
import torch

from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.evaluation import evaluate
from cmr_bench.registry import get_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit(multilabel=False, **overrides):
    ds = make_synthetic(n_train=300, n_test=120, image_dim=24, text_dim=12, num_classes=5,
                        multilabel=multilabel, noise=0.3, seed=3)
    cls = get_method("label-softmax")
    m = cls.create(seed=0, image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes,
                   label_kind=ds.label_kind, config=cls.resolve_config({"epochs": 30, **overrides}))
    log = m.fit(ds.splits["train"])
    return m, log, ds.splits["test"]


def test_linear_by_default_mlp_variant_has_one_hidden_layer():
    cls = get_method("label-softmax")
    lin, _, _ = _fit(epochs=1)
    mlp, _, _ = _fit(epochs=1, **cls.variants["mlp"])
    assert [type(x).__name__ for x in lin.net["image"]] == ["Linear"]
    assert [type(x).__name__ for x in mlp.net["text"]] == ["Linear", "ReLU", "Linear"]


def test_codes_are_class_probabilities_and_retrieve_by_class():
    m, log, test = _fit()
    assert log[-1]["L"] < log[0]["L"]
    ci, ct = m.encode(test.image, "image"), m.encode(test.text, "text")
    assert ci.shape == (len(test), 5)
    np.testing.assert_allclose(ci.sum(1), 1.0, rtol=1e-5)
    assert (ci >= 0).all() and (ct >= 0).all()
    maps = [evaluate(q, r, test.labels, test.labels, similarity="cosine", device="cpu")["map@all"] for q, r in ((ci, ct), (ct, ci))]
    assert min(maps) > 0.6  # easy data: the classifiers are right (random codes give ~0.2)


def test_multilabel_codes_are_sigmoids():
    m, _, test = _fit(multilabel=True)
    ci = m.encode(test.image, "image")
    assert ((ci > 0) & (ci < 1)).all()
    assert not np.allclose(ci.sum(1), 1.0)
    with torch.no_grad():
        x = m.standardizer(torch.as_tensor(test.image, dtype=torch.float32), "image")
        np.testing.assert_allclose(ci, torch.sigmoid(m.net["image"](x)).numpy(), rtol=1e-5, atol=1e-6)


def test_table_2_lists_the_reference_row_and_its_mlp_variant(tmp_path):
    from cmr_bench.report.tables import paper_table

    t = paper_table("2", "synthetic", tmp_path / "no-runs")
    rows = dict(zip(t.frame["method"], t.frame["plugin"]))
    assert rows["Label-softmax"] == "label-softmax"
    assert rows["Label-softmax [mlp]"] == "label-softmax[mlp]"
