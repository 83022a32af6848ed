"""Conformance checks every method plugin must pass, built-in or installed; used by
`cmr-bench check-plugin NAME` and by the test parametrized over the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np

from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.plugin import Method


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class _Forbidden(Exception):
    pass


def _read_only(split):
    for a in (split.image, split.text, split.labels):
        a.setflags(write=False)
    return split


def _build(cls: type[Method], ds, seed: int, bits: int | None, device: str) -> Method:
    config = cls.resolve_config(dict(cls.smoke_config))
    return cls.create(image_dim=ds.image_dim, text_dim=ds.text_dim, num_classes=ds.num_classes,
                      label_kind=ds.label_kind, config=config, bits=bits, device=device, seed=seed)


def _encode(m: Method, split, modality):
    return np.asarray(m.encode(split.features(modality), modality))


def run_checks(cls: type[Method], device: str = "cpu", multilabel: bool | None = None) -> list[CheckResult]:
    import warnings

    with warnings.catch_warnings():
        # The inputs are read-only on purpose (a plugin must not modify them); torch warns when
        # it wraps such arrays even though it only reads them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return _run_checks(cls, device, multilabel)


def check_declarations(cls: type[Method]) -> None:
    """The hyperparameter contract (cmr_bench.hparams): every declaration a Param whose default,
    smoke value and search range it accepts itself, every variant and dataset default a valid
    value of a declared hyperparameter, and every string hyperparameter names its choices (so
    that a typo in --set is a one-line error before the grid instead of a failed run)."""
    from cmr_bench.hparams import Param, check_search, validate_config

    assert isinstance(cls.params, dict), "params must be a dict of cmr_bench.hparams.Param"
    for key, p in cls.params.items():
        assert isinstance(p, Param), f"params[{key!r}] is not a cmr_bench.hparams.Param"
        assert p.type is not str or p.choices, (
            f"string hyperparameter {key}={p.default!r} declares no choices (Param(..., choices=(...)))")
        if p.search is not None:
            check_search(p, key, p.search, f"params[{key!r}].search")
    validate_config(cls, dict(cls.defaults), "defaults")
    validate_config(cls, dict(cls.smoke_config), "smoke values")
    for name, overrides in cls.dataset_defaults.items():
        validate_config(cls, dict(overrides), f"dataset_defaults[{name}]")
    for name, overrides in cls.variants.items():
        validate_config(cls, dict(overrides), f"variant {name!r}")


def _run_checks(cls: type[Method], device: str, multilabel: bool | None) -> list[CheckResult]:
    results: list[CheckResult] = []

    def check(name: str, fn: Callable[[], str | None]) -> bool:
        try:
            detail = fn() or ""
            results.append(CheckResult(name, True, detail))
            return True
        except (Exception, SystemExit) as exc:  # every failure is reported (sys.exit in fit too), none stops the report
            results.append(CheckResult(name, False, (f"{type(exc).__name__}: {exc}".splitlines() or ["SystemExit"])[0]))
            return False

    def metadata():
        info = cls.info
        assert cls.name and cls.name == cls.name.lower(), "name must be lower-case and non-empty"
        assert cls.code_type in ("real", "binary"), f"code_type {cls.code_type!r}"
        for field_name in ("full_name", "paper", "venue", "year", "status", "supervision"):
            assert getattr(info, field_name), f"MethodInfo.{field_name} is empty"
        check_declarations(cls)
        return f"{cls.info.full_name} ({cls.info.venue} {cls.info.year}), status {cls.info.status}"

    if not check("metadata", metadata):
        return results

    multi = multilabel if multilabel is not None else cls.code_type == "binary"
    ds = make_synthetic(n_train=64, n_test=24, image_dim=20, text_dim=12, num_classes=4, multilabel=multi, seed=1)
    train, test = _read_only(ds.splits["train"]), _read_only(ds.splits["test"])
    bits = 16 if cls.code_type == "binary" else None
    state = {}

    def fit_and_encode():
        m = _build(cls, ds, 0, bits, device)

        def forbid(*a, **k):
            raise _Forbidden("the plugin tried to load a dataset itself: it may only use the splits fit() is given")

        with mock.patch("cmr_bench.data.loader.load_dataset", forbid), mock.patch("cmr_bench.load_dataset", forbid, create=True):
            log = m.fit(train, None if not cls.uses_validation else test.subset(np.arange(8), "val"))
            codes = {mod: _encode(m, test, mod) for mod in ("image", "text")}
        assert isinstance(log, list) and all(isinstance(r, dict) for r in log), "fit() must return a list of dicts"
        state.update(model=m, codes=codes)
        return f"{len(log)} log rows"

    if not check("fit and encode on tiny synthetic data (test split untouched, inputs read-only)", fit_and_encode):
        return results
    codes = state["codes"]

    def shapes():
        ci, ct = codes["image"], codes["text"]
        assert ci.ndim == 2 and ci.shape[0] == len(test), f"image codes shape {ci.shape}"
        assert ct.ndim == 2 and ct.shape[0] == len(test), f"text codes shape {ct.shape}"
        assert ci.shape[1] == ct.shape[1], f"image and text codes differ in length: {ci.shape[1]} vs {ct.shape[1]}"
        if bits:
            assert ci.shape[1] == bits, f"asked for {bits} bits, got {ci.shape[1]}"
        return f"codes {ci.shape[1]}-d"

    def finite():
        assert all(np.isfinite(c).all() for c in codes.values()), "codes contain NaN or Inf"

    def binary():
        if cls.code_type != "binary":
            return "real-valued: n/a"
        assert all(np.isin(c, (-1, 1)).all() for c in codes.values()), "binary codes must be ±1"

    def deterministic():
        m2 = _build(cls, ds, 0, bits, device)
        m2.fit(train, None if not cls.uses_validation else test.subset(np.arange(8), "val"))
        for mod in ("image", "text"):
            assert np.array_equal(_encode(m2, test, mod), codes[mod]), f"same seed gave different {mod} codes"

    def round_trip():
        if type(state["model"]).state_dict is Method.state_dict:
            return "not implemented (optional)"
        state_dict = state["model"].state_dict()
        fresh = _build(cls, ds, 123, bits, device)
        fresh.load_state_dict(state_dict)
        for mod in ("image", "text"):
            assert np.allclose(_encode(fresh, test, mod), codes[mod], atol=1e-6), f"{mod} codes differ after load_state_dict"

    def per_item():
        m = state["model"]
        rows = np.arange(5)
        sub = test.subset(rows)
        for mod in ("image", "text"):
            assert np.allclose(_encode(m, sub, mod), codes[mod][rows], atol=1e-5), (
                f"{mod} codes depend on the other items in the batch (encode must be per item)"
            )

    for name, fn in (("code shapes", shapes), ("finite codes", finite), ("±1 codes", binary),
                     ("same seed -> identical codes", deterministic), ("state_dict round trip", round_trip),
                     ("per-item encoding (no transductive leakage)", per_item)):
        check(name, fn)
    return results
