"""Every registered method declares a search space that validates, and a 2-trial study runs for
it on tiny synthetic data (issue 14). A newly registered method is covered without a new test."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from cmr_bench.registry import all_methods  # noqa: E402

# The default run tunes these (one per kind of space: a grid, a TPE space of a torch method, a
# binary method); the rest are opt-in (-m slow), like the full conformance grid of studies.
FAST = {"cca", "dscmr", "sdeh"}


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_every_method_declares_a_valid_search_space(name):
    from cmr_bench.tuning import is_grid, search_space

    cls = all_methods()[name]
    space = search_space(cls)  # raises on an empty or malformed space
    for key, entry in space.items():
        default = cls.defaults[key]
        if entry[0] == "choice":
            assert default in entry[1], f"{name}.{key}: default {default!r} not among the choices"
        elif key in ("epochs", "iterations"):  # CPU budget: at most twice the longest default's training
            longest = max([default] + [d[key] for d in cls.dataset_defaults.values() if key in d])
            assert entry[2] <= 2 * longest, f"{name}.{key}: up to {entry[2]}, more than twice the default {longest}"
        else:  # the paper's value lies inside its range (a space that excludes it cannot find it)
            assert entry[1] <= default <= entry[2], f"{name}.{key}: default {default} outside [{entry[1]}, {entry[2]}]"
    from cmr_bench.trainer import TorchMethod

    if not issubclass(cls, TorchMethod):  # closed forms and fixed solvers: deterministic, a grid
        assert is_grid(space), f"{name}: a deterministic method tunes on a grid (choices only)"


def _study(name, tmp_path):
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.tuning import tune_method

    cls = all_methods()[name]
    ds = make_synthetic(n_train=96, n_test=24, image_dim=20, text_dim=12, num_classes=4, seed=1)
    bits = 16 if cls.code_type == "binary" else None
    # the plugin's smoke sizes pinned: the study's machinery is under test, not the method's speed
    res = tune_method(name, ds, 2, f"sqlite:///{tmp_path / 'studies.db'}", bits=bits, pin=dict(cls.smoke_config), startup=1)
    assert res["trials"] + res["pruned"] == 2 and res["trials"] >= 1
    assert set(res["tuned"]) == set(cls.search_space)
    assert 0.0 <= res["value"] <= 1.0


@pytest.mark.parametrize("name", sorted(FAST & set(all_methods())))
def test_a_two_trial_study_runs(name, tmp_path):
    _study(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(all_methods()) - FAST))
def test_a_two_trial_study_runs_for_every_method(name, tmp_path):
    _study(name, tmp_path)
