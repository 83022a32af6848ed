"""Hyperparameter declarations (cmr_bench/hparams.py): one declaration per hyperparameter,
one validator, and resolved configs that never move (run identities and folders depend on them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmr_bench.registry import all_methods
from cmr_bench.runner.grid import DEFAULT_BITS, DEFAULT_PROTOCOL
from cmr_bench.runner.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "resolved_configs.json"


def resolved_configs() -> dict:
    """json.dumps(resolved config, sort_keys=True) and the RunSpec config hash of every
    registered method x variant x code length x dataset_defaults, the smoke configs, and the
    committed tuned files of results/tuned/wiki."""
    from cmr_bench.runner.tuned import tuned_config

    out = {}
    for name, cls in all_methods().items():
        if cls.__module__.startswith("tests."):
            continue
        for ds in dict.fromkeys([None, "wiki", *sorted(cls.dataset_defaults)]):
            for variant in ["", *cls.variants]:
                for bits in (DEFAULT_BITS if cls.code_type == "binary" else (None,)):
                    config = cls.resolve_config(dict(cls.variants.get(variant, {})), dataset=ds)
                    spec = RunSpec(ds or "none", DEFAULT_PROTOCOL[cls.code_type], name, 0, variant, bits, {}, config)
                    out[f"{name}|{ds}|{variant}|{bits}"] = {"config": json.dumps(config, sort_keys=True), "hash": spec.config_hash}
        if cls.smoke_config:
            out[f"{name}|smoke"] = {"config": json.dumps(cls.resolve_config(dict(cls.smoke_config)), sort_keys=True)}
    for f in sorted((REPO / "results" / "tuned" / "wiki").glob("*.toml")):
        name, bits = f.stem, None
        if f.stem.endswith("bits"):
            name, b = f.stem.rsplit("-", 1)
            bits = int(b[:-4])
        config = tuned_config(name, "wiki", bits, REPO / "results" / "tuned")
        cls = all_methods()[name]
        spec = RunSpec("wiki", DEFAULT_PROTOCOL[cls.code_type], name, 0, "", bits, {}, config, config_source="tuned")
        out[f"tuned|{f.stem}"] = {"config": json.dumps(config, sort_keys=True), "hash": spec.config_hash}
    return out


def test_resolved_configs_and_run_identities_do_not_move():
    """Every plugin's defaults, variants, dataset defaults, smoke configs and committed tuned
    configs resolve to the same bytes (and so the same config hash and run folder) as before
    the declarations moved into `params`. Regenerate the fixture only for a deliberate change."""
    expected = json.loads(FIXTURE.read_text())
    got = resolved_configs()
    assert sorted(got) == sorted(expected)
    moved = [k for k in expected if got[k] != expected[k]]
    assert not moved, f"{len(moved)} resolved configs moved, first {moved[0]}: {got[moved[0]]} != {expected[moved[0]]}"


# --- the declarations ------------------------------------------------------------------------

BUILTIN = {n: c for n, c in all_methods().items() if c.__module__.startswith("cmr_bench.methods.")}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_declared_value_passes_its_own_validator(name):
    """Defaults, smoke values, search ranges, variants and dataset defaults of every plugin are
    values its declarations accept; every hyperparameter has a one-line doc."""
    from cmr_bench.conformance import check_declarations
    from cmr_bench.hparams import Param

    cls = BUILTIN[name]
    assert "params" in vars(cls) or any("params" in vars(b) for b in cls.__mro__[1:-1]), "declare `params`"
    check_declarations(cls)
    for key, p in cls.params.items():
        assert isinstance(p, Param)
        assert p.doc and "\n" not in p.doc and len(p.doc) <= 120, f"{name}.{key}: doc must be one short line"


def test_the_validator_returns_the_declared_type_and_refuses_the_rest():
    from cmr_bench.hparams import HyperparameterError, Param, check_value

    p_int, p_float = Param(10, low=1, high=100), Param(0.5, low=0.0, high=1.0)
    assert check_value(p_int, 4.0, "x") == 4 and type(check_value(p_int, 4.0, "x")) is int
    assert check_value(p_float, 1, "x") == 1.0 and type(check_value(p_float, 1, "x")) is float
    p_list = Param([512, 256], item=int, low=1)
    assert check_value(p_list, [8.0, 4], "x") == [8, 4]
    assert check_value(Param((5, 3), item=int, low=1), (2, 1), "x") == (2, 1)
    assert check_value(Param("a", choices=("a", "b")), "b", "x") == "b"
    assert check_value(Param([0.5, 0.9], item=float, low=0.0, high=1.0, length=2), [0.1, 0.2], "x") == [0.1, 0.2]
    for p, bad in [(p_int, 0), (p_int, 101), (p_int, 2.5), (p_int, True), (p_int, "4"), (p_int, None), (p_int, [4]),
                   (p_float, -0.1), (p_float, float("nan")), (p_float, float("inf")), (p_float, False), (p_float, "0.5"),
                   (p_list, [8, 0]), (p_list, 8), (p_list, ["8"]), (Param("a", choices=("a", "b")), "c"),
                   (Param(True), 1), (Param(True), "true"), (Param(1.0), 1e308),
                   (Param([0.5, 0.9], item=float, low=0.0, high=1.0, length=2), [0.5])]:
        with pytest.raises(HyperparameterError, match="x = .*: expected"):
            check_value(p, bad, "x")


def test_unknown_keys_and_legacy_plugins():
    from cmr_bench.errors import UnknownNameError
    from cmr_bench.hparams import HyperparameterError, Param, validate_config
    from cmr_bench.plugin import Method, MethodInfo

    class Old(Method):  # a plugin written before `params`: its four dicts become declarations
        name = "test-old-style"
        info = MethodInfo("Old", "test", "test", 2026, status="baseline")
        defaults = {"reg": 0.1, "dims": 4, "kind": "a"}
        choices = {"kind": ("a", "b")}
        search_space = {"reg": ("logfloat", 1e-3, 1.0)}
        smoke_config = {"dims": 2}

    assert Old.params["reg"].search == ("logfloat", 1e-3, 1.0) and Old.smoke_config == {"dims": 2}
    assert validate_config(Old, {"reg": 1, "dims": 3.0}, "--set") == {"reg": 1.0, "dims": 3}
    with pytest.raises(HyperparameterError, match=r"--set: test-old-style.reg = -1: expected a finite number in \[0,"):
        validate_config(Old, {"reg": -1}, "--set")
    with pytest.raises(HyperparameterError, match="one of a, b"):
        validate_config(Old, {"kind": "c"}, "--set")
    with pytest.raises(UnknownNameError, match="did you mean reg"):
        validate_config(Old, {"regg": 1.0}, "--set")
    with pytest.raises(TypeError, match="declare each hyperparameter once"):
        type("Twice", (Method,), {"name": "test-twice", "params": {"a": Param(1)}, "defaults": {"a": 1}})


def test_methods_read_typed_values_without_casts():
    """A method's config holds the declared types wherever it was made (the runner, a test, a
    notebook), so no method casts: `float(c["alpha"])` and friends are gone from methods/."""
    import re

    from cmr_bench.registry import get_method

    cls = get_method("sdcmr")
    m = cls(image_dim=4, text_dim=3, num_classes=2, config={**cls.defaults, "k": 8.0, "alpha": 1, "hidden": [16.0]})
    assert type(m.config["k"]) is int and type(m.config["alpha"]) is float and m.config["hidden"] == [16]
    cast = re.compile(r"\b(float|int|bool|str)\((self\.)?(c|config|cfg)\[")
    found = [f"{p.name}: {line.strip()}" for p in sorted((REPO / "methods").glob("*.py"))
             for line in p.read_text().splitlines() if cast.search(line)]
    # SCM's 0/1 centring factor is a number made from a flag, not a cast of a value read untyped
    assert [f for f in found if "center_posteriors" not in f] == []


_NOT_A_SENTENCE_END = r"(?<!\bEq)(?<!\bEqs)(?<!\bSec)(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bFig)(?<!\bTab)(?<!\bvs)(?<!\bNo)"


def test_deviations_are_one_sentence_each():
    """MethodInfo.deviations are one sentence each (the evidence lives in docs/methods.md and
    docs/hashing-methods.md, not in the metadata shown by `list methods` and the tables)."""
    import re

    second_sentence = re.compile(_NOT_A_SENTENCE_END + r"[.!?]\s+[A-Z(]")
    assert second_sentence.search("One sentence. Another one.") and not second_sentence.search("See Eq. 9 and Sec. III.")
    for name, cls in BUILTIN.items():
        for text in cls.info.deviations:
            assert len(text) <= 300, f"{name}: a deviation of {len(text)} characters: {text[:80]}..."
            assert not second_sentence.search(text.strip()), f"{name}: more than one sentence: {text[:120]}"


def test_experiment_files_parse_values_without_the_cli():
    """experiment.py takes its value parsers from the library (runner/values.py), not from a CLI module."""
    text = (REPO / "cmr_bench" / "experiment.py").read_text()
    assert "cmr_bench.commands" not in text
