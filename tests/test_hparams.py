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
    from cmr_bench.tuning import tuned_config

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
