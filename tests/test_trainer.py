"""The shared trainer and the plugin contract around it: one log schema for every torch method,
the z-scoring note recorded once per run, the config resolved once, seeding in one place,
and executors that hand runs back instead of writing them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmr_bench.data.loader import load_dataset
from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.plugin import Method
from cmr_bench.registry import all_methods, get_method
from cmr_bench.trainer import STANDARDIZE_NOTE, TorchMethod

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH = sorted(n for n, c in all_methods().items() if issubclass(c, TorchMethod))


def _make(name, seed=0, **overrides):
    cls = get_method(name)
    ds = make_synthetic(n_train=64, n_test=16, image_dim=12, text_dim=8, num_classes=4,
                        multilabel=cls.code_type == "binary", seed=2)
    config = cls.resolve_config({**cls.smoke_config, **overrides})
    m = cls.create(image_dim=12, text_dim=8, num_classes=4, label_kind=ds.label_kind, config=config,
                   bits=16 if cls.code_type == "binary" else None, device="cpu", seed=seed)
    return m, ds


@pytest.mark.parametrize("name", TORCH)
def test_every_torch_method_logs_one_schema(name):
    m, ds = _make(name)
    train = ds.splits["train"]
    val = train.subset(np.arange(8), "val") if m.uses_validation else None
    log = m.fit(train, val)
    unit = "iteration" if m.schedule == "iterations" else "epoch"
    assert [row[unit] for row in log] == list(range(1, int(m.config[m.schedule]) + 1))
    for row in log:
        assert all(isinstance(v, (int, float)) for v in row.values()), row
        assert not {"seconds", "fit_seconds", "step"} & set(row), row  # the runner times fit, once
    assert not ({"epoch", "iteration"} - {unit}) & set(log[0])


def test_standardize_note_is_recorded_once_per_run_not_per_method(tmp_path):
    from cmr_bench.runner.execute import compute
    from cmr_bench.runner.grid import expand

    ds = load_dataset("synthetic")
    on = compute(expand(["p3s"], ds, [0], overrides={"p3s.iterations": 2, "p3s.hidden": [8, 8]})[0], ds, "cpu")
    off = compute(expand(["p3s"], ds, [0], overrides={"p3s.iterations": 2, "p3s.hidden": [8, 8],
                                                      "p3s.standardize": False})[0], ds, "cpu")
    assert on.run["notes"] == [STANDARDIZE_NOTE] and off.run["notes"] == []
    for name in TORCH:  # no plugin repeats the sentence in its metadata
        assert not any("z-scored with training-split statistics by default" in d for d in get_method(name).info.deviations)
        cls = get_method(name)
        assert "dataset_defaults" not in vars(cls) or cls.dataset_defaults, f"{name}: an empty dataset_defaults is the default already"


def test_the_runner_resolves_a_config_once(monkeypatch):
    from cmr_bench.runner.execute import compute
    from cmr_bench.runner.grid import expand

    calls = []
    original = Method.resolve_config.__func__
    monkeypatch.setattr(Method, "resolve_config", classmethod(lambda cls, *a, **k: calls.append(cls.name) or original(cls, *a, **k)))
    ds = load_dataset("synthetic")
    (spec,) = expand(["sdgzsl"], ds, [0], overrides={"sdgzsl.iterations": 2})
    assert len(calls) == 1
    record = compute(spec, ds, "cpu")
    assert record.status == "done" and len(calls) == 1  # building the plugin does not resolve it again


def test_create_is_the_one_seeding_layer():
    a, ds = _make("dscmr", seed=3)
    torch.rand(100)  # whatever ran before does not matter: create seeds everything
    np.random.rand(10)
    b, _ = _make("dscmr", seed=3)
    c, _ = _make("dscmr", seed=4)
    wa, wb, wc = (next(iter(m.net.parameters())).detach() for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_a_torch_method_keeps_only_optional_state_hooks():
    class NoState(Method):
        name = "no-state"

    m = NoState(image_dim=2, text_dim=2, num_classes=2)
    with pytest.raises(NotImplementedError, match="does not save its state"):
        m.state_dict()


@pytest.mark.parametrize("jobs", [1, 2])
def test_executors_hand_back_records_and_never_write(tmp_path, jobs):
    """Only the grid's process writes run folders: an executor computes and returns the record."""
    from cmr_bench.runner.executors import RECORD, InlineExecutor, ProcessExecutor
    from cmr_bench.runner.grid import expand

    ds = load_dataset("synthetic")
    (spec,) = expand(["cca"], ds, [0])
    runs = tmp_path / "runs"
    executor = InlineExecutor(ds, "cpu", runs) if jobs == 1 else ProcessExecutor(1, ("object", ds), "cpu", runs, threads=1)
    try:
        executor.submit(spec)
        outcomes = []
        while not outcomes:
            outcomes = executor.wait(5)
    finally:
        executor.close()
    (outcome,) = outcomes
    assert outcome.kind == RECORD and outcome.record.run["status"] == "done"
    assert outcome.record.run["runner"]["executor"] == ("inline" if jobs == 1 else "process")
    assert not runs.exists()  # nothing written by the executor or its worker
