"""Every registered method, on tiny synthetic data, CPU: the conformance checks of
`cmr-bench check-plugin`. A newly registered method is tested without writing a test."""

import pytest

from cmr_bench.conformance import run_checks
from cmr_bench.registry import all_methods


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_method_conforms(name):
    results = run_checks(all_methods()[name], device="cpu")
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    assert len(results) == 8


@pytest.mark.parametrize("name", sorted(n for n, c in all_methods().items() if c.code_type == "binary"))
def test_binary_methods_on_single_label_data(name):
    results = run_checks(all_methods()[name], device="cpu", multilabel=False)
    assert all(r.ok for r in results), [f"{r.name}: {r.detail}" for r in results if not r.ok]


def test_checks_catch_a_broken_plugin():
    """The checks can fail: a plugin with nondeterministic, wrong-shaped codes is caught."""
    import numpy as np

    from cmr_bench.plugin import Method, MethodInfo

    class Broken(Method):
        name = "broken"
        info = MethodInfo("Broken", "none", "none", 2026, status="baseline")

        def fit(self, train, val=None):
            return [{"step": 0}]

        def encode(self, features, modality):
            k = 3 if modality == "image" else 4
            return np.random.default_rng().normal(size=(len(features), k))

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    failed = {r.name for r in run_checks(Broken) if not r.ok}
    assert {"code shapes", "same seed -> identical codes", "state_dict round trip"} <= failed


def test_checks_catch_a_plugin_that_loads_data_itself():
    from cmr_bench.plugin import Method, MethodInfo

    class Peeker(Method):
        name = "peeker"
        info = MethodInfo("Peeker", "none", "none", 2026, status="baseline")

        def fit(self, train, val=None):
            import cmr_bench

            cmr_bench.load_dataset("wiki")  # forbidden: could read the test split
            return []

    failed = [r for r in run_checks(Peeker) if not r.ok]
    assert failed and "load a dataset" in failed[0].detail


def test_string_hyperparameters_must_declare_their_choices(run_cli, tmp_path):
    """A string option without `choices` let `--set ssah.pair_norm=foo` through to a failed run
    (ValueError inside fit); now the plugin check asks for the choices and the grid refuses the
    typo before anything runs."""
    from cmr_bench.hparams import Param
    from cmr_bench.registry import get_method

    ssah = get_method("ssah")
    Undeclared = type("Undeclared", (ssah,), {"params": {**ssah.params, "pair_norm": Param("balanced")}})
    failed = {r.name: r.detail for r in run_checks(Undeclared) if not r.ok}
    assert "metadata" in failed and "pair_norm='balanced' declares no choices" in failed["metadata"]
    Variant = type("Variant", (ssah,), {"variants": {**ssah.variants, "typo": {"pair_norm": "summ"}}})
    failed = {r.name: r.detail for r in run_checks(Variant) if not r.ok}
    assert "variant 'typo'" in failed.get("metadata", "")
    code, out, err = run_cli("run", "--methods", "ssah", "--dataset", "synthetic", "--bits", "16", "--seeds", "0",
                             "--set", "ssah.pair_norm=foo", "--results-dir", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pair_norm" in err and "balanced" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run.json"))
