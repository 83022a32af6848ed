"""The store's claim/commit API (issue 29): the one way a run is written, owning the run's lock;
and the callbacks (cmr_bench/hooks.py) through which a fit reports progress and validation."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from cmr_bench.errors import StoreError
from cmr_bench.runner import store
from cmr_bench.runner.lock import RunLock, lock_path, probe


def _record(seed: int = 0, status: str = "done"):
    run = {"spec": {"seed": seed}, "status": status}
    metrics = {"i2t": {"map@all": 0.5}, "t2i": {"map@all": 0.25}} if status == "done" else None
    return SimpleNamespace(run=run, metrics=metrics, log=[{"epoch": 1, "loss": 0.5}], arrays={"a": np.arange(3)})


def test_a_claim_holds_the_lock_until_commit_and_commit_writes_the_run(tmp_path):
    folder = tmp_path / "cfg" / "seed-0"
    claim = store.claim(folder)
    assert claim is not None and claim.state.status is None and claim.notes == []
    assert probe(lock_path(folder)) == "held"
    assert store.claim(folder) is None  # a second claimant (another invocation) is refused
    assert str(os.getpid()) in store.holder(folder)
    claim.commit(_record())
    assert probe(lock_path(folder)) == "absent"
    state = store.validate_run(folder)
    assert state.status == "done" and state.metrics["t2i"]["map@all"] == 0.25
    again = store.claim(folder)
    assert again is not None and again.state.status == "done"  # what the folder holds now
    again.release()


def test_a_claim_released_unwritten_leaves_no_folder_and_no_lock(tmp_path):
    folder = tmp_path / "cfg" / "seed-1"
    claim = store.claim(folder)
    claim.release()
    assert not folder.exists() and probe(lock_path(folder)) == "absent"


def test_claiming_tidies_what_an_interrupted_write_left(tmp_path):
    folder = tmp_path / "cfg" / "seed-2"
    record = _record(2)
    store.write_run(folder, record.run, record.metrics, [], {})
    aside = folder.parent / f".{folder.name}.old-1-5"
    os.rename(folder, aside)  # killed between the two renames of a replacement
    (folder.parent / f".{folder.name}.tmp-1-6").mkdir()  # an empty temp folder
    claim = store.claim(folder)
    assert claim.state.status == "done"  # the last complete result is back
    assert sorted(claim.notes) == sorted([f"restored {aside.name}", f"removed .{folder.name}.tmp-1-6"])
    claim.release()


def test_a_failed_commit_still_releases_the_lock(tmp_path):
    folder = tmp_path / "cfg" / "seed-3"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("not a run")  # not the store's: never replaced
    claim = store.claim(folder)
    assert claim.state.status == "corrupt"
    with pytest.raises(StoreError, match="not a cmr-bench run folder"):
        claim.commit(_record(3))
    assert probe(lock_path(folder)) == "absent" and (folder / "mine.txt").exists()


def test_a_lock_that_cannot_be_taken_is_a_store_error(tmp_path):
    folder = tmp_path / "cfg" / "seed-4"
    lock_path(folder).parent.mkdir(parents=True)
    lock_path(folder).mkdir()  # a folder where the lock file belongs
    with pytest.raises(StoreError, match="results store: cannot lock"):
        RunLock(folder).acquire()


# --- hooks ------------------------------------------------------------------------------------


def _dscmr(seed=0):
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.registry import get_method

    cls = get_method("dscmr")
    ds = make_synthetic(n_train=64, n_test=16, image_dim=12, text_dim=8, num_classes=4, seed=2)
    config = cls.resolve_config({**cls.smoke_config, "epochs": 3})
    m = cls.create(image_dim=12, text_dim=8, num_classes=4, label_kind=ds.label_kind, config=config, device="cpu", seed=seed)
    return m, ds.splits["train"], ds.splits["train"].subset(np.arange(16), "val")


def test_the_trainer_reports_progress_through_the_hooks_it_was_given(one_torch_thread):
    from cmr_bench.hooks import TrainHooks

    m, train, val = _dscmr()
    steps = []
    m.hooks = TrainHooks(progress=lambda done, total, loss, unit: steps.append((done, total, unit, loss is not None)))
    log = m.fit(train, val)
    refit = int(log[-1]["refit_epochs"])  # DSCMR selects its epoch, then is refitted on train + val
    assert steps == [(i, 3, "epoch", True) for i in (1, 2, 3)] + [(i, refit, "epoch", True) for i in range(1, refit + 1)]
    quiet, _, _ = _dscmr()
    assert quiet.fit(train, val)  # no hooks set: nothing to report to, and nothing fails


def test_fits_in_threads_each_report_to_their_own_hooks(one_torch_thread):
    """`tune --jobs N` runs trials in threads: each fit's scores reach its own trial only."""
    from cmr_bench.hooks import TrainHooks

    seen: dict[int, list] = {0: [], 1: []}

    def fit(k):
        m, train, val = _dscmr(seed=k)
        m.hooks = TrainHooks(validation=lambda step, score: seen[k].append(step))
        m.fit(train, val)

    threads = [threading.Thread(target=fit, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {0: [1, 2, 3], 1: [1, 2, 3]}
