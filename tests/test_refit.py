"""Every row trains on the same items: a method that selects its epoch on the validation split
carved from train is refitted on the whole training split for the selected number of epochs
(issue 26.2); `tune`, which scores on that validation split, keeps the selected weights."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_bench.data.splits import carve_validation, rejoin
from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.registry import all_methods, get_method
from cmr_bench.trainer import REFIT_NOTE, TorchMethod

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"hidden": 32, "common": 16, "batch_size": 25, "lr": 5e-4}


def _data():
    ds = make_synthetic(n_train=200, n_test=60, image_dim=16, text_dim=8, num_classes=4, noise=1.0, seed=5)
    return ds, ds.splits["train"], ds.splits["test"]


def _dscmr(ds, **overrides):
    cls = get_method("dscmr")
    return cls.create(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes, label_kind=ds.label_kind,
                      config=cls.resolve_config({**SMALL, **overrides}), device="cpu", seed=0)


def _peaking_at(epoch: int):
    """A validation score that peaks at `epoch` (1-based), whatever the model does."""
    def validation_map(self, val, database=None):
        score = 1.0 - abs(self.done + 1 - epoch) / 10
        return score, score
    return validation_map


def test_rejoin_gives_back_the_split_validation_was_carved_from():
    _, train_full, _ = _data()
    train, val = carve_validation(train_full, 0.2, seed=1)
    whole = rejoin(train, val)
    np.testing.assert_array_equal(whole.indices, train_full.indices)
    np.testing.assert_array_equal(whole.image, train_full.image)
    np.testing.assert_array_equal(whole.labels, train_full.labels)


def test_a_selecting_method_is_refitted_on_every_training_item_for_the_selected_epochs(monkeypatch):
    ds, train_full, test = _data()
    train, val = carve_validation(train_full, 0.2, seed=0)
    monkeypatch.setattr(get_method("dscmr"), "validation_map", _peaking_at(3))
    m = _dscmr(ds, epochs=8)
    seen = []
    original = TorchMethod.prepare
    monkeypatch.setattr(TorchMethod, "prepare", lambda self, split: seen.append(split.indices) or original(self, split))
    log = m.fit(train, val)
    assert log[-1]["selected_epoch"] == 3 and log[-1]["refit_epochs"] == 3
    assert log[-1]["refit_items"] == len(train_full)
    np.testing.assert_array_equal(seen[-1], train_full.indices)  # the final fit reads every training item
    # ... and is the same model as 3 epochs on the whole split from the run's seed (DSCMR's
    # learning rate does not depend on the schedule's length).
    ref = _dscmr(ds, epochs=3, select_on_validation=False)
    ref.fit(train_full, None)
    for modality in ("image", "text"):
        np.testing.assert_array_equal(m.encode(test.features(modality), modality), ref.encode(test.features(modality), modality))


def test_the_refit_goes_through_a_plugin_that_wraps_fit(monkeypatch):
    ds, train_full, _ = _data()
    train, val = carve_validation(train_full, 0.2, seed=0)
    cls = get_method("dscmr")
    calls = []

    def wrapped(self, train, val=None):  # e.g. CMDN resets a cache around the trainer's fit
        calls.append((len(train), val is not None))
        return TorchMethod.fit(self, train, val)

    monkeypatch.setattr(cls, "fit", wrapped)
    _dscmr(ds, epochs=3).fit(train, val)
    assert calls == [(len(train), True), (len(train_full), False)]


def test_refit_is_deterministic():
    ds, train_full, test = _data()
    train, val = carve_validation(train_full, 0.2, seed=0)
    a, b = _dscmr(ds, epochs=4), _dscmr(ds, epochs=4)
    a.fit(train, val)
    b.fit(train, val)
    np.testing.assert_array_equal(a.encode(test.image, "image"), b.encode(test.image, "image"))


def test_refit_false_keeps_the_selected_weights(monkeypatch):
    ds, train_full, _ = _data()
    train, val = carve_validation(train_full, 0.2, seed=0)
    m = _dscmr(ds, epochs=6)
    m.refit_after_selection = False
    log = m.fit(train, val)
    assert "refit_epochs" not in log[-1]
    scores = [(r["val_map_i2t"] + r["val_map_t2i"]) / 2 for r in log]
    assert np.mean(m.validation_map(val)) == pytest.approx(max(scores), abs=1e-9)


def test_tune_scores_the_selected_weights_not_a_refit_on_validation():
    from cmr_bench.tuning import validation_score

    ds, train_full, _ = _data()
    cls = get_method("dscmr")
    config = cls.resolve_config({**SMALL, "epochs": 5})
    value = validation_score(cls, ds, train_full, config, None, 0, 0.2)
    train, val = carve_validation(train_full, 0.2, seed=0)
    m = _dscmr(ds, epochs=5)
    m.refit_after_selection = False
    log = m.fit(train, val)
    assert value == pytest.approx(max((r["val_map_i2t"] + r["val_map_t2i"]) / 2 for r in log), abs=1e-9)


def test_the_run_records_the_refit():
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.runner.execute import compute
    from cmr_bench.runner.grid import expand

    ds = load_dataset("synthetic")
    (spec,) = expand(["dscmr"], ds, [0], overrides={f"dscmr.{k}": v for k, v in {**SMALL, "epochs": 2}.items()})
    record = compute(spec, ds, "cpu")
    assert record.status == "done" and REFIT_NOTE in record.run["notes"]
    assert record.log[-1]["refit_items"] == len(ds.split(ds.protocol(spec.protocol).train))


def test_exactly_the_selecting_methods_are_refitted():
    selecting = sorted(n for n, c in all_methods().items() if c.defaults.get("select_on_validation"))
    assert selecting == ["caal", "cm-gan", "deep-sm", "dscmr", "mcsm", "tanss"]
    assert all(get_method(n).uses_validation for n in selecting)
