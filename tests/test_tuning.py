"""`cmr-bench tune` (issue 14): a tiny study on synthetic data, resuming, and bad input."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

pytest.importorskip("optuna")

from cmr_bench import registry  # noqa: E402
from cmr_bench.plugin import Method, MethodInfo  # noqa: E402
from registering import registered


def _registered(cls):
    """Fixture body: the test plugin in the registry while the test runs, removed after."""
    with registered(cls):
        yield cls


@pytest.fixture
def ridge_method():
    """A cheap real-valued method with a continuous space (the TPE path)."""

    class Ridge(Method):
        name = "test-ridge"
        code_type = "real"
        info = MethodInfo("Ridge", "test", "test", 2026, status="baseline")
        defaults = {"reg": 1.0, "dims": 4}
        search_space = {"reg": ("logfloat", 1e-3, 1e2), "dims": ("int", 2, 6)}

        def fit(self, train, val=None):
            y = np.eye(train.labels.max() + 1)[train.labels] if train.labels.ndim == 1 else train.labels
            self.w = {m: np.linalg.solve(train.features(m).T @ train.features(m) + self.config["reg"] * np.eye(train.features(m).shape[1]),
                                         train.features(m).T @ y)[:, : self.config["dims"]] for m in ("image", "text")}
            return []

        def encode(self, features, modality):
            return (features @ self.w[modality]).astype(np.float32)

    yield from _registered(Ridge)


def test_tiny_study_writes_the_best_config_and_resumes(run_cli, tmp_path, ridge_method):
    out = tmp_path / "tuned"
    code, stdout, err = run_cli("tune", "--methods", "cca,test-ridge", "--dataset", "synthetic", "--trials", "3", "--out", out)
    assert code == 0, err
    cca = tomllib.loads((out / "synthetic" / "cca.toml").read_text())
    assert cca["sampler"] == "grid" and cca["trials"] == 3 and cca["seed"] == 0 and cca["data"]
    assert set(cca["tuned"]) == {"reg", "power"} and cca["config"]["dims"] == 0  # untuned keys keep their defaults
    ridge = tomllib.loads((out / "synthetic" / "test-ridge.toml").read_text())
    assert ridge["sampler"] == "tpe" and ridge["trials"] == 3 and 1e-3 <= ridge["config"]["reg"] <= 1e2
    # the recorded score is the objective recomputed for the recorded config (no hidden state)
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import validation_score

    ds = load_dataset("synthetic")
    again = validation_score(ridge_method, ds, ds.split(ds.protocol("real").train), ridge["config"], None, 0, 0.1)
    assert again == pytest.approx(ridge["value"])
    # same storage, same budget: resumed, no new trial
    code, stdout, err = run_cli("tune", "--methods", "test-ridge", "--dataset", "synthetic", "--trials", "3", "--out", out)
    assert code == 0 and "after 3 trials" in stdout, err
    # a study of the same name made with other settings is refused
    code, stdout, err = run_cli("tune", "--methods", "test-ridge", "--dataset", "synthetic", "--trials", "3", "--out", out, "--seed", "1")
    assert code == 2 and "other data or settings" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def spaceless_method():
    class Spaceless(Method):
        name = "test-spaceless"
        code_type = "real"
        info = MethodInfo("Spaceless", "test", "test", 2026, status="baseline")
        defaults = {"x": 1.0}
        search_space: dict = {}

        def fit(self, train, val=None):
            return []

        def encode(self, features, modality):
            return features[:, :2].astype(np.float32)

    yield from _registered(Spaceless)


def test_bad_input_is_one_line(run_cli, tmp_path, spaceless_method):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    base = ["--dataset", "synthetic", "--out", tmp_path / "t"]
    for argv, message in [
        (["--methods", "nope", "--trials", "2"], "nope"),
        (["--methods", "test-spaceless", "--trials", "2"], "declares no search space"),
        (["--methods", "cca", "--trials", "0"], "--trials must be >= 1"),
        (["--methods", "cca", "--trials", "-3"], "--trials must be >= 1"),
        (["--methods", "cca", "--trials", "2", "--storage", f"sqlite:///{tmp_path}/no/such/dir/x.db"], "study storage"),
        (["--methods", "cca", "--trials", "2", "--storage", f"sqlite:///{corrupt}"], "study storage"),
        (["--methods", "cca", "--trials", "2", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "study storage"),
        (["--methods", "cca", "--trials", "2", "--storage", "no-such-scheme://x"], "study storage"),
    ]:
        code, out, err = run_cli("tune", *argv, *base)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_a_study_file_of_another_dataset_is_refused(run_cli, tmp_path):
    from conftest import write_user_dataset

    optuna = pytest.importorskip("optuna")
    # the default study file of 'synthetic' holding another dataset's study: copied there by mistake
    (tmp_path / "t" / "synthetic").mkdir(parents=True)
    optuna.create_study(study_name="mydata/cca", storage=f"sqlite:///{tmp_path / 't' / 'synthetic' / 'studies.db'}")
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "2", "--out", tmp_path / "t")
    assert code == 2 and "another dataset (mydata/cca)" in err and len(err.strip().splitlines()) == 1, err
    # the same dataset name with other data, in one explicit storage: refused, not mixed
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = write_user_dataset(tmp_path / "a", seed=0), write_user_dataset(tmp_path / "b", seed=1)
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", first, "--trials", "2", "--out", tmp_path / "o", "--storage", storage)
    assert code == 0, err
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", second, "--trials", "2", "--out", tmp_path / "o", "--storage", storage)
    assert code == 2 and "other data or settings" in err and "data" in err and len(err.strip().splitlines()) == 1, err


def test_a_malformed_space_is_refused_before_any_trial():
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.tuning import search_space

    class Bad(Method):
        name = "test-bad-space"
        info = MethodInfo("Bad", "test", "test", 2026, status="baseline")
        defaults = {"epochs": 10, "lr": 1e-3, "flag": True}

    for space, message in [
        ({"epochs": ("float", 1.0, 5.0)}, "needs a float hyperparameter"),  # int default, float kind
        ({"lr": ("int", 1, 5)}, "'int' needs an integer"),
        ({"epochs": ("choice", [5, 7.5])}, "expected an integer"),
        ({"flag": ("choice", [0, 1])}, "expected true or false"),
        ({"lr": ("float", -1.0, 1.0)}, r"expected a finite number in \[0,"),
        ({"nope": ("float", 0.0, 1.0)}, "not a hyperparameter"),
        ({"lr": ("logfloat", 0.0, 1.0)}, "low > 0"),
        ({"lr": ("choice", [])}, "at least one value"),
    ]:
        Bad.search_space = space
        with pytest.raises(CmrBenchError, match=message):
            search_space(Bad)


@pytest.fixture
def stepping_method():
    """Reports a validation score per epoch as the trainer does; the score is its knob."""

    class Stepping(Method):
        name = "test-stepping-tune"
        code_type = "real"
        uses_validation = True
        info = MethodInfo("Stepping", "test", "test", 2026, status="baseline")
        defaults = {"x": 0.5}
        search_space = {"x": ("float", 0.0, 1.0)}
        epochs_run: list = []

        def fit(self, train, val=None):
            for epoch in range(1, 11):
                type(self).epochs_run.append(epoch)
                self.hooks.validation_score(epoch, self.config["x"])
            return []

        def encode(self, features, modality):
            return features[:, :2].astype(np.float32)

    yield from _registered(Stepping)


def test_poor_trials_are_pruned_on_the_reported_validation_scores(tmp_path, stepping_method):
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    ds = load_dataset("synthetic")
    res = tune_method("test-stepping-tune", ds, 12, f"sqlite:///{tmp_path / 's.db'}", startup=2, warmup=0)
    assert res["pruned"] > 0 and res["trials"] + res["pruned"] == 12
    assert len(stepping_method.epochs_run) < 12 * 10  # a pruned trial stopped training early


def test_the_trainer_reports_its_validation_score_per_epoch():
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.hooks import TrainHooks
    from cmr_bench.registry import get_method

    cls = get_method("dscmr")
    ds = make_synthetic(n_train=64, n_test=16, image_dim=12, text_dim=8, num_classes=4, seed=2)
    config = cls.resolve_config(cls.smoke_config)
    m = cls.create(image_dim=12, text_dim=8, num_classes=4, label_kind=ds.label_kind, config=config, device="cpu", seed=0)
    seen = []
    m.hooks = TrainHooks(validation=lambda step, score: seen.append((step, score)))
    log = m.fit(ds.splits["train"], ds.splits["train"].subset(np.arange(16), "val"))
    assert [s for s, _ in seen] == list(range(1, config["epochs"] + 1))
    assert [v for _, v in seen] == pytest.approx([(r["val_map_i2t"] + r["val_map_t2i"]) / 2 for r in log])


@pytest.mark.parametrize("name, steps", [("sdcmr", 20), ("acmr", 3)])
def test_a_method_that_does_not_select_still_reports_for_the_pruner_and_fits_the_same(name, steps):
    """SDCMR and ACMR keep their last step, so without this they gave the pruner nothing: a
    40-trial SDCMR study ran every trial to the end. Scored about 10 times per fit, only while
    a listener is installed; the fitted model is the one a plain fit makes."""
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.hooks import TrainHooks
    from cmr_bench.registry import get_method

    cls = get_method(name)
    assert not cls.resolve_config(cls.defaults).get("select_on_validation")
    ds = make_synthetic(n_train=64, n_test=16, image_dim=12, text_dim=8, num_classes=4, seed=2)
    config = cls.resolve_config({**cls.smoke_config, cls.schedule: steps})
    train, val = ds.splits["train"], ds.splits["train"].subset(np.arange(16), "val")

    def fitted(listen: bool):
        m = cls.create(image_dim=12, text_dim=8, num_classes=4, label_kind=ds.label_kind, config=config, device="cpu", seed=0)
        seen = []
        m.hooks = TrainHooks(validation=(lambda step, score: seen.append((step, score))) if listen else None)
        log = m.fit(train, val)
        return seen, log, m.encode(ds.splits["test"].image, "image")

    seen, log, codes = fitted(True)
    every = max(1, steps // 10)
    assert [s for s, _ in seen] == sorted(set(range(every, steps + 1, every)) | {steps})
    assert all(0.0 <= v <= 1.0 for _, v in seen)
    assert not any("val_map_i2t" in row for row in log)  # nothing logged: the run's log is unchanged
    quiet, quiet_log, quiet_codes = fitted(False)
    assert quiet == [] and np.array_equal(codes, quiet_codes)


def test_tuning_prunes_a_method_that_does_not_select(tmp_path):
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    ds = load_dataset("synthetic")
    res = tune_method("sdcmr", ds, 6, f"sqlite:///{tmp_path / 's.db'}", startup=1, warmup=0,
                      pin={"iterations": 20, "hidden": [32, 16], "k": 8, "batch_size": 16})
    import optuna

    study = optuna.load_study(study_name="synthetic/sdcmr", storage=f"sqlite:///{tmp_path / 's.db'}")
    reported = [t.intermediate_values for t in study.trials]
    assert all(len(v) >= 1 for v in reported) and res["trials"] + res["pruned"] == 6


@pytest.mark.parametrize("name", sorted(registry.all_methods()))
def test_every_search_space_contains_the_methods_defaults(name):
    """Trial 0 of a study is the paper's defaults, so a tuned config is never worse than them on
    validation; DSCMR's space (20-200 epochs) once left its 500-epoch default out."""
    from cmr_bench.tuning import default_params, search_space

    cls = registry.get_method(name)
    for dataset in ("wiki", "synthetic", *cls.dataset_defaults):
        assert default_params(cls, search_space(cls), dataset) is not None, (name, dataset)


def test_the_first_trial_of_a_study_is_the_defaults(tmp_path):
    import optuna

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    ds = load_dataset("synthetic")
    pin = {"iterations": 5, "hidden": [32, 16], "k": 8, "batch_size": 16}
    tune_method("sdcmr", ds, 2, f"sqlite:///{tmp_path / 's.db'}", pin=pin)
    study = optuna.load_study(study_name="synthetic/sdcmr", storage=f"sqlite:///{tmp_path / 's.db'}")
    cls = registry.get_method("sdcmr")
    defaults = cls.resolve_config({}, dataset="synthetic")
    assert study.trials[0].params == {k: defaults[k] for k in cls.search_space}
    assert study.trials[1].params != study.trials[0].params


def test_parallel_trials_never_share_the_enqueued_defaults(tmp_path, stepping_method):
    """With --jobs 2 two threads could take the same enqueued trial (the defaults); the second
    `tell` then raised "Cannot tell a COMPLETE trial" out of `tune` (seen on cm-gan). The waiting
    trials now run one at a time before the parallel ones."""
    import optuna

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    ds = load_dataset("synthetic")
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f's{attempt}.db'}"
        res = tune_method("test-stepping-tune", ds, 6, storage, jobs=2, startup=100)
        study = optuna.load_study(study_name="synthetic/test-stepping-tune", storage=storage)
        assert res["trials"] == 6 and study.trials[0].params == {"x": 0.5}
        assert [t.params["x"] for t in study.trials].count(0.5) == 1
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.fixture
def binary_ridge_method():
    """A cheap deterministic binary method (sign of a ridge projection): the hashing protocol's path."""

    class BinaryRidge(Method):
        name = "test-binary-ridge"
        code_type = "binary"
        info = MethodInfo("Binary ridge", "test", "test", 2026, status="baseline")
        defaults = {"reg": 1.0}
        search_space = {"reg": ("logfloat", 1e-3, 1e2)}

        def fit(self, train, val=None):
            y = train.labels if train.labels.ndim == 2 else np.eye(train.labels.max() + 1)[train.labels]
            rng = np.random.default_rng(0)
            self.w = {}
            for m in ("image", "text"):
                x = train.features(m)
                proj = np.linalg.solve(x.T @ x + self.config["reg"] * np.eye(x.shape[1]), x.T @ y)
                self.w[m] = proj @ rng.normal(size=(y.shape[1], self.bits))
            return []

        def encode(self, features, modality):
            return np.where(features @ self.w[modality] >= 0, 1, -1).astype(np.int8)

    yield from _registered(BinaryRidge)


def test_a_hashing_study_ranks_validation_against_the_fitted_items(run_cli, tmp_path, binary_ridge_method):
    """The hashing protocol ranks unseen queries against a database of the training items, so the
    objective does the same with validation queries and the items fitted. Val-vs-val picked SDEH
    configs that fit the database worse (wiki, 64 bits: test T->I 0.74 -> 0.34)."""
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import validation_database, validation_score

    ds = load_dataset("synthetic")
    assert validation_database(ds.protocol("hash")) == "fit" and validation_database(ds.protocol("real")) == "validation"
    out = tmp_path / "tuned"
    code, stdout, err = run_cli("tune", "--methods", "test-binary-ridge", "--dataset", "synthetic", "--trials", "3",
                                "--bits", "16", "--out", out)
    assert code == 0, err
    tuned = tomllib.loads((out / "synthetic" / "test-binary-ridge-16bits.toml").read_text())
    assert tuned["protocol"] == "hash" and "against the training items" in tuned["objective"]
    train = ds.split(ds.protocol("hash").train)
    fit = validation_score(binary_ridge_method, ds, train, tuned["config"], 16, 0, 0.1, "fit")
    val = validation_score(binary_ridge_method, ds, train, tuned["config"], 16, 0, 0.1, "validation")
    assert tuned["value"] == pytest.approx(fit) and fit != pytest.approx(val)


def test_a_study_made_before_the_database_was_recorded_resumes_as_val_vs_val(tmp_path, ridge_method):
    """Studies stored without the `database` key were all val vs val: a real-valued one resumes, a
    hashing one (now ranked against the fitted items) is refused with one line."""
    import optuna

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.tuning import tune_method

    ds = load_dataset("synthetic")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    tune_method("test-ridge", ds, 2, storage)
    study = optuna.load_study(study_name="synthetic/test-ridge", storage=storage)
    legacy = {k: v for k, v in study.user_attrs["identity"].items() if k != "database"}
    study.set_user_attr("identity", legacy)
    assert tune_method("test-ridge", ds, 3, storage)["trials"] == 3
    study.set_user_attr("identity", {**legacy, "database": "fit"})
    with pytest.raises(CmrBenchError, match="database 'fit' != 'validation'"):
        tune_method("test-ridge", ds, 4, storage)


def test_the_trainer_scores_against_the_database_tune_asks_for():
    """While `tune` listens on a hashing protocol, the pruner's intermediate scores rank validation
    queries against the fitted items too (the objective's database), not against each other."""
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.hooks import TrainHooks
    from cmr_bench.registry import get_method

    cls = get_method("sdeh")
    ds = make_synthetic(n_train=64, n_test=16, image_dim=12, text_dim=8, num_classes=4, multilabel=True, seed=2)
    config = cls.resolve_config({**cls.smoke_config, "epochs": 3})
    train, val = ds.splits["train"], ds.splits["train"].subset(np.arange(16), "val")

    def reported(database):
        m = cls.create(image_dim=12, text_dim=8, num_classes=4, label_kind=ds.label_kind, config=config, bits=16,
                       device="cpu", seed=0)
        seen = []
        m.hooks = TrainHooks(validation=lambda step, score: seen.append(score), validation_database=database)
        m.fit(train, val)
        return seen[-1], m

    last, m = reported(train)
    assert last == pytest.approx(np.mean(m.validation_map(val, train)))
    assert last != pytest.approx(np.mean(m.validation_map(val)))
    last, m = reported(None)
    assert last == pytest.approx(np.mean(m.validation_map(val)))
