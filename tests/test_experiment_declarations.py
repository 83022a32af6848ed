"""The built-in experiment files declare every run their tables show (issue 26): Table II's Tuned
columns, SSAH's paper-form row and the tuned hashing rows, on the datasets that have tuned
configurations; elsewhere those grids are skipped, not an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmr_bench.data.loader import load_dataset
from cmr_bench.experiment import experiment_specs, load_experiment


def _grid(exp, name):
    return next(g for g in exp.grids if g.name == name)


def test_table2_declares_its_tuned_runs_for_every_method():
    exp = load_experiment("sdcmr-tip2024")
    default, tuned = _grid(exp, "table2"), _grid(exp, "table2-tuned")
    assert tuned.config == "tuned" and tuned.methods == default.methods and tuned.seeds == default.seeds
    assert tuned.datasets == ("wiki",)
    assert {o.kind for o in exp.tables} >= {"2", "3", "4", "5"}


def test_hashing_declares_ssah_paper_loss_and_tuned_rows():
    exp = load_experiment("hashing")
    paper = _grid(exp, "hash-ssah-paper-loss")
    assert paper.methods == ("ssah",) and paper.variants in ("paper loss", ("paper loss",), ["paper loss"])
    assert paper.bits == _grid(exp, "hash").bits
    tuned = _grid(exp, "hash-tuned")
    assert tuned.config == "tuned" and set(tuned.methods) == {"ssah", "djsrh", "sdeh"} and tuned.bits == _grid(exp, "hash").bits


@pytest.mark.parametrize("name", ["sdcmr-tip2024", "hashing"])
def test_tuned_grids_are_skipped_on_a_dataset_without_tuned_configs(name):
    exp = load_experiment(name)
    specs = experiment_specs(exp, load_dataset("synthetic"), runs_dir=Path("runs"))
    assert specs and all(sp.to_json().get("config_source", "default") == "default" for sp in specs)
