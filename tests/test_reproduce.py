"""`cmr-bench reproduce` (experiment files), the sensitivity figure of a sweep, and
`cmr-bench eval --run` re-scoring stored codes under another metric convention."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

TINY = '''
name = "tiny"
title = "A tiny experiment"
dataset = "synthetic"

[[grids]]
name = "main"
methods = ["cca", "random"]
seeds = [0]

[[sweeps]]
name = "reg"
method = "cca"
parameters = ["reg", "power"]
values = [0.0001, 0.1, 0.5]
seeds = [0, 1]

[[tables]]
table = "2"

[[figures]]
figure = "pr"
protocol = "real"

[[figures]]
figure = "sweep"
sweep = "reg"
caption = "sensitivity of CCA"
'''


def _run_folders(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.rglob("run.json") if not any(s.startswith(".") for s in p.parts))


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _one_line_error(code, out, err, message):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cmr-bench: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


# --- experiment files -----------------------------------------------------------------------


def test_builtin_experiments_load_and_declare_the_papers_outputs():
    from cmr_bench.experiment import builtin_experiments, load_experiment

    found = builtin_experiments()
    assert {"sdcmr-tip2024", "hashing"} <= set(found)
    sdcmr = load_experiment("sdcmr-tip2024")
    assert [t.kind for t in sdcmr.tables] == ["2", "3", "4", "5"]
    assert [f.kind for f in sdcmr.figures] == ["pr", "sweep", "tsne"]
    sweep = sdcmr.sweep("sensitivity")
    assert sweep.parameters == ("alpha", "beta", "gamma", "eta") and len(sweep.values) == 7 and len(sweep.seeds) == 3
    table3 = next(g for g in sdcmr.grids if g.name == "table3")
    assert table3.variants.split(",") == ["w/o L_rec", "w/o L_sim", "w/o L_ad", "w/o L_ind"] and len(table3.seeds) == 5
    hashing = load_experiment("hashing")
    assert {t.kind for t in hashing.tables} == {"hash", "djsrh-ablation"}
    assert next(g for g in hashing.grids if g.name == "hash").bits == (16, 32, 64, 128)


def test_sweep_values_equal_to_the_default_reuse_the_default_run():
    """SDCMR's gamma default is 10: the sweep's gamma=10 point is the default run, not a --set run."""
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.experiment import load_experiment, sweep_specs

    ds = load_dataset("synthetic")
    specs = sweep_specs(load_experiment("sdcmr-tip2024").sweep("sensitivity"), ds)
    # alpha=1, gamma=10 and eta=1 are defaults; beta=5 is not among the values: 4 x 7 - 3 configurations
    configs = {(tuple(sorted(s.overrides.items()))) for s in specs}
    assert len(configs) == 4 * 7 - 3 + 1 and () in configs
    assert len(specs) == 4 * 7 * 3
    assert not any(s.overrides == {"gamma": 10.0} for s in specs)


# --- reproduce end to end ---------------------------------------------------------------------


def test_reproduce_runs_writes_outputs_and_a_second_call_runs_nothing(run_cli, tiny, tmp_path):
    results, out = tmp_path / "runs", tmp_path / "out"
    code, stdout, err = run_cli("reproduce", tiny, "--results-dir", results, "--out", out, "--no-progress")
    assert code == 0, stdout + err
    folders = _run_folders(results)
    # grid: cca, random (seed 0); sweep: reg 0.1 and 0.5, power 0.0001, 0.1 and 0.5 at seeds 0 and 1, and the
    # default cca at seed 1 (reg 0.0001 is the default: shared with the grid at seed 0)
    assert len(folders) == 2 + 1 + 2 * 5
    assert {"table2.csv", "table2.md", "table2.tex", "fig_pr.png", "fig_reg.png"} <= {p.name for p in out.iterdir()}
    if importlib.util.find_spec("cmr_bench.report.page"):
        assert (out / "report.html").is_file() and (out / "report.md").is_file()
    else:
        assert "skipped the report" in stdout
    before = {p: (p / "run.json").stat().st_mtime_ns for p in folders}
    code, stdout, err = run_cli("reproduce", tiny, "--results-dir", results, "--out", out, "--no-progress")
    assert code == 0, stdout + err
    assert f"nothing to run: all {len(folders)} runs are stored" in stdout
    assert before == {p: (p / "run.json").stat().st_mtime_ns for p in _run_folders(results)}


def test_two_experiments_in_one_folder_keep_their_own_reports(run_cli, tmp_path):
    """The hashing and sdcmr-tip2024 experiments share results/<dataset>/: each writes the report its
    file names (report.html / report-hashing.html), each page shows its own figures only, and
    --figures link writes a page that points at the PNGs beside it."""
    import re

    results, out = tmp_path / "runs", tmp_path / "out"
    one = tmp_path / "one.toml"
    one.write_text('name = "one"\n[[grids]]\nmethods = ["cca"]\n[[tables]]\ntable = 2\n'
                   '[[figures]]\nfigure = "pr"\nprotocol = "real"\n')
    two = tmp_path / "two.toml"
    two.write_text('name = "two"\nreport = "two-page"\n[[grids]]\nmethods = ["cca"]\n[[tables]]\ntable = 2\n'
                   '[[figures]]\nfigure = "precision-at-r"\nprotocol = "real"\n')
    for exp in (two, one):  # two first: its page's .md is in the folder when one's page is written
        code, stdout, err = run_cli("reproduce", exp, "--dataset", "synthetic", "--results-dir", results, "--out", out,
                                    "--no-progress", "--figures", "link")
        assert code == 0, stdout + err
    pages = {name: (out / f"{name}.html").read_text(encoding="utf-8") for name in ("report", "two-page")}
    assert (out / "report.md").is_file() and (out / "two-page.md").is_file()
    srcs = {name: re.findall(r'<img src="([^"]+)"', page) for name, page in pages.items()}
    assert srcs == {"report": ["fig_pr.png"], "two-page": ["fig_precision_at_r.png"]}
    assert all((out / src).is_file() for found in srcs.values() for src in found)
    # the table files each page lists are its own: "two-page.md" (named outside report-*) is not a table
    links = {name: sorted(set(re.findall(r'<a href="([^"]+\.(?:csv|tex|md))"', page))) for name, page in pages.items()}
    assert links == dict.fromkeys(("report", "two-page"), ["table2.csv", "table2.md", "table2.tex"])
    assert "base64" not in pages["report"]


def test_report_figures_embedded_or_linked(run_cli, tmp_path):
    import base64
    import re

    results, out = tmp_path / "runs", tmp_path / "out"
    code, stdout, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")
    assert code == 0, stdout + err
    assert run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", results, "--out", out / "fig_pr.png")[0] == 0
    png = (out / "fig_pr.png").read_bytes()
    assert run_cli("report", "--dataset", "synthetic", "--results-dir", results, "--out", out)[0] == 0
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', (out / "report.html").read_text())
    assert [base64.b64decode(e) for e in embedded] == [png]
    code, stdout, err = run_cli("report", "--dataset", "synthetic", "--results-dir", results, "--out", out,
                                "--figures", "link", "--name", "small")
    assert code == 0, err
    small = (out / "small.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', small) == ["fig_pr.png"] and len(small) < len(png)
    assert "small.html" in stdout
    code, stdout, err = run_cli("report", "--dataset", "synthetic", "--results-dir", results, "--out", out, "--name", "../up")
    _one_line_error(code, stdout, err, "not a plain name")
    assert not (tmp_path / "up.html").exists()


def test_default_output_folder_is_the_one_table_uses(run_cli, tmp_path):
    exp = tmp_path / "t.toml"
    exp.write_text('name = "t"\n[[grids]]\nmethods = ["random"]\n[[tables]]\ntable = 2\n')
    results = tmp_path / "runs"
    code, stdout, err = run_cli("reproduce", exp, "--dataset", "synthetic", "--results-dir", results, "--no-progress")
    assert code == 0, stdout + err
    assert (results / "_out" / "synthetic" / "table2.csv").is_file()


def test_dry_run_lists_runs_and_outputs_and_runs_nothing(run_cli, tiny, tmp_path):
    results = tmp_path / "runs"
    code, stdout, err = run_cli("reproduce", tiny, "--results-dir", results, "--dry-run")
    assert code == 0, stdout + err
    assert stdout.count("pending ") == 13
    assert "estimate: about" in stdout
    assert "would write into" in stdout and "fig_reg.png" in stdout and "table 2" in stdout
    assert not results.exists()


def test_failed_runs_are_kept_unless_asked(run_cli, tmp_path, monkeypatch):
    from cmr_bench.registry import get_method

    exp = tmp_path / "t.toml"
    exp.write_text('name = "t"\n[[grids]]\nmethods = ["random"]\n')
    results = tmp_path / "runs"
    cls = get_method("random")

    def boom(self, train, val=None):
        raise RuntimeError("diverged")

    monkeypatch.setattr(cls, "fit", boom)
    args = ("reproduce", exp, "--dataset", "synthetic", "--results-dir", results, "--no-progress")
    code, stdout, _ = run_cli(*args)
    assert code == 1 and "1 run(s) failed" in stdout
    code, stdout, _ = run_cli(*args)
    assert "not retried" in stdout and "nothing to run" in stdout
    code, stdout, _ = run_cli(*args, "--retry-failed")
    assert "1 runs: 0 already finished, 1 to run" in stdout


BAD = {
    "unknown top-level key": ('name = "x"\n[[gridz]]\nmethods = ["cca"]\n', "unknown key 'gridz'"),
    "unknown grid key": ('name = "x"\n[[grids]]\nmethods = ["cca"]\nseed = [0]\n', "unknown key 'seed'"),
    "unknown method": ('name = "x"\n[[grids]]\nmethods = ["ccaa"]\n', "unknown method 'ccaa'"),
    "unknown variant": ('name = "x"\n[[grids]]\nmethods = ["sdcmr"]\nvariants = ["w/o L_foo"]\n', "unknown variant"),
    "unknown table": ('name = "x"\n[[tables]]\ntable = "7"\n', "unknown table '7'"),
    "unknown figure": ('name = "x"\n[[figures]]\nfigure = "heatmap"\n', "unknown figure 'heatmap'"),
    "sweep on a key the method lacks": (
        'name = "x"\n[[sweeps]]\nname = "s"\nmethod = "cca"\nparameters = ["alpha"]\nvalues = [1]\n',
        "unknown hyperparameter of method 'cca' 'alpha'"),
    "sweep over a non-numeric key": (
        'name = "x"\n[[sweeps]]\nname = "s"\nmethod = "sdcmr"\nparameters = ["hidden"]\nvalues = [1]\n', "not numeric"),
    "sweep figure of an undeclared sweep": ('name = "x"\n[[figures]]\nfigure = "sweep"\nsweep = "s"\n', "unknown sweep 's'"),
    "malformed TOML": ('name = "x"\n[[grids]\nmethods = ["cca"]\n', "not valid TOML"),
    "unknown config": ('name = "x"\n[[grids]]\nmethods = ["cca"]\nconfig = "best"\n', "config must be one of default, tuned"),
    "set on a key no method has": ('name = "x"\n[[grids]]\nmethods = ["cca"]\nset = { alpha = 1 }\n', "no method of this grid"),
    "declares nothing": ('name = "x"\n', "declares nothing"),
    "seeds not integers": ('name = "x"\n[[grids]]\nmethods = ["cca"]\nseeds = ["a"]\n', "seeds must be"),
    "report name escaping its folder": ('name = "x"\nreport = "../x"\n[[tables]]\ntable = 2\n', "not a plain name"),
    "report name with its extension": ('name = "x"\nreport = "r.html"\n[[tables]]\ntable = 2\n', "without its extension"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_experiment_files_exit_2_with_one_line(run_cli, tmp_path, case):
    text, message = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run_cli("reproduce", path, "--dataset", "synthetic", "--results-dir", tmp_path / "runs", "--dry-run")
    _one_line_error(code, out, err, message)
    assert str(path) in err and not (tmp_path / "runs").exists()


def test_bad_command_lines_exit_2_with_one_line(run_cli, tmp_path):
    runs = tmp_path / "runs"
    _one_line_error(*run_cli("reproduce", "sdcmr-tip2042", "--dataset", "synthetic", "--results-dir", runs), "unknown experiment 'sdcmr-tip2042'")
    _one_line_error(*run_cli("reproduce", tmp_path / "nope.toml", "--results-dir", runs), "does not exist")
    _one_line_error(*run_cli("reproduce", "--results-dir", runs), "name an experiment")
    no_dataset = tmp_path / "n.toml"
    no_dataset.write_text('name = "n"\n[[grids]]\nmethods = ["cca"]\n')
    _one_line_error(*run_cli("reproduce", no_dataset, "--results-dir", runs), "give --dataset")
    tuned = tmp_path / "tuned.toml"
    tuned.write_text('name = "t"\n[[grids]]\nmethods = ["cca"]\nconfig = "tuned"\n')
    # without tuned support in the runner, or without a tuned file for cca: either way one line
    _one_line_error(*run_cli("reproduce", tuned, "--dataset", "synthetic", "--results-dir", runs, "--tuned-dir", tmp_path / "none"), "tuned")
    _one_line_error(*run_cli("reproduce", "hashing", "--dataset", "synthetc", "--results-dir", runs), "unknown dataset")
    assert not runs.exists()


def test_list_shows_the_builtin_experiments(run_cli):
    code, out, _ = run_cli("reproduce", "--list")
    assert code == 0 and "sdcmr-tip2024" in out and "hashing" in out


# --- the sweep figure's data ------------------------------------------------------------------


def _store_run(runs: Path, method: str, seed: int, overrides: dict, i2t: float, t2i: float, config=None, status="done"):
    from cmr_bench.registry import get_method
    from cmr_bench.runner.spec import RunSpec
    from cmr_bench.runner.store import write_run

    config = config or get_method(method).resolve_config(overrides, dataset="synthetic")
    spec = RunSpec("synthetic", "real", method, seed, "", None, overrides, config)
    metrics = {"similarity": "cosine", "i2t": {"map@all": i2t}, "t2i": {"map@all": t2i}} if status == "done" else None
    write_run(spec.folder(runs), {"spec": spec.to_json(), "status": status, "finished": "2026-01-01T00:00:00"}, metrics, [], {})


def test_sweep_points_from_a_hand_made_store(tmp_path):
    from cmr_bench.registry import get_method
    from cmr_bench.report.sweep import plot_sweep, sweep_points

    runs = tmp_path / "runs"
    _store_run(runs, "cca", 0, {}, 0.5, 0.3)  # default reg 1e-4, power 0: avg 0.4
    _store_run(runs, "cca", 1, {}, 0.6, 0.4)  # avg 0.5
    _store_run(runs, "cca", 0, {"reg": 0.1}, 0.3, 0.1)  # avg 0.2
    _store_run(runs, "cca", 1, {"reg": 0.1}, 0.4, 0.2)  # avg 0.3
    _store_run(runs, "cca", 2, {"reg": 0.1}, 0.9, 0.9)  # seed 2: not a sweep seed
    _store_run(runs, "cca", 0, {"power": 0.5}, 0.7, 0.5)  # avg 0.6
    _store_run(runs, "cca", 1, {"power": 0.5}, 0.1, 0.1, status="failed")  # failed: no point
    _store_run(runs, "cca", 0, {"reg": 0.1, "power": 0.5}, 0.9, 0.9)  # two keys set: neither curve
    old = {**get_method("cca").resolve_config({}, dataset="synthetic"), "dims": 3}
    _store_run(runs, "cca", 1, {"reg": 0.1}, 0.9, 0.9, config={**old, "reg": 0.1})  # older defaults (folder of its own)
    _store_run(runs, "random", 0, {}, 0.9, 0.9)  # another method

    points = sweep_points(runs, "synthetic", "cca", ["reg", "power"], values=[1e-4, 0.1, 0.5], seeds=[0, 1])
    reg = {p["value"]: p for p in points["reg"]}
    assert sorted(reg) == [1e-4, 0.1]
    assert reg[1e-4]["mean"] == pytest.approx(0.45) and reg[1e-4]["std"] == pytest.approx(math.sqrt(0.005))
    assert reg[1e-4]["n"] == 2 and reg[1e-4]["seeds"] == [0, 1]
    assert reg[0.1]["mean"] == pytest.approx(0.25) and reg[0.1]["std"] == pytest.approx(math.sqrt(0.005)) and reg[0.1]["n"] == 2
    # the default power (0) is not among the values; power 0.5 has one finished run
    assert [(p["value"], p["n"]) for p in points["power"]] == [(0.5, 1)]
    assert points["power"][0]["mean"] == pytest.approx(0.6) and points["power"][0]["std"] == 0.0
    png = plot_sweep(runs, "synthetic", tmp_path / "fig.png", "cca", ["reg", "power"], values=[1e-4, 0.1, 0.5], seeds=[0, 1])
    assert png.stat().st_size > 1000


def test_sweep_figure_without_runs_is_a_one_line_error(tmp_path):
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.report.sweep import plot_sweep

    with pytest.raises(CmrBenchError, match="no finished runs of the cca sweep"):
        plot_sweep(tmp_path / "none", "synthetic", tmp_path / "f.png", "cca", ["reg"], values=[0.1])


# --- eval --run --------------------------------------------------------------------------------


def test_eval_run_default_convention_equals_the_stored_metrics(run_cli, tmp_path):
    results = tmp_path / "runs"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")[0] == 0
    folder = _run_folders(results)[0]
    stored = json.loads((folder / "metrics.json").read_text())
    code, out, err = run_cli("eval", "--run", folder, "--json", "--device", "cpu")
    assert code == 0, err
    got = json.loads(out)
    for d in ("i2t", "t2i"):
        for metric in ("map@all", "map@50"):
            row = got["directions"][d][metric]
            assert row["stored"] == stored[d][metric]
            assert row["rescored"] == pytest.approx(stored[d][metric], abs=1e-12)
    code, out, err = run_cli("eval", "--run", folder, "--device", "cpu")
    assert code == 0 and "Img2Txt" in out and "map@50" in out


@pytest.fixture
def tied_run(tmp_path):
    """Three test pairs, labels 0, 1, 0, every code identical: every ranking is one tie.

    Stable order (retrieval index), AP per query: label 0 finds its two relevant items at ranks 1
    and 3: (1 + 2/3)/2 = 5/6; label 1 at rank 2: 1/2. mAP = (5/6 + 1/2 + 5/6)/3 = 13/18.
    Ties averaged: one relevant item among 3 tied slots: (1 + 1/2 + 1/3)/3 = 11/18; two: the
    pairs of ranks {1,2}, {1,3}, {2,3} give 1, 5/6, 7/12, mean 29/36. mAP = (29/36 + 11/18 +
    29/36)/3 = 20/27."""
    from conftest import write_user_dataset

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.runner.spec import RunSpec
    from cmr_bench.runner.store import write_run

    def labels(arrays):
        arrays["test_labels"] = np.array([0, 1, 0])

    manifest = write_user_dataset(tmp_path / "data", n_train=6, n_test=3, mutate=labels)
    ds = load_dataset(manifest)
    test = ds.split("test")
    spec = RunSpec(ds.name, "real", "cca", 0, config={"reg": 1e-4}, data=ds.fingerprint)
    ones = np.ones((3, 2), np.float32)
    arrays = {"codes_query_image": ones, "codes_query_text": ones, "codes_retrieval_image": ones, "codes_retrieval_text": ones,
              "split_query_indices": test.indices, "split_retrieval_indices": test.indices}
    stored = {"map@all": 20 / 27, "map@50": 20 / 27}
    metrics = {"similarity": "cosine", "i2t": dict(stored), "t2i": dict(stored)}
    folder = spec.folder(tmp_path / "runs")
    write_run(folder, {"spec": spec.to_json(), "status": "done"}, metrics, [], arrays)
    return folder, manifest


@pytest.mark.parametrize("convention, metric, stored_metric, expected", [
    ("default", "map@all", "map@all", 20 / 27),
    ("legacy-dscmr", "map@3", "map@all", 13 / 18),  # k = number of queries (3), ties in retrieval order
    ("legacy-djsrh", "map@50", "map@50", 13 / 18),  # top 50 > 3 items: the whole stable ranking
    ("trec", "map@50", "map@50", 20 / 27),  # min(50, R) = R: AP@all with ties averaged
    # cut-off variants NAME@K: top 2 in retrieval order, found there: label 0 finds rank 1 (AP 1),
    # label 1 finds rank 2 (AP 1/2 over its one found): (1 + 1/2 + 1)/3
    ("legacy-djsrh@2", "map@2", "map@all", 5 / 6),
    # top 1, denominator min(1, R) = 1, ties averaged: P(first item relevant) = 2/3, 1/3, 2/3
    ("trec@1", "map@1", "map@all", 5 / 9),
    ("legacy-dscmr@all", "map@all", "map@all", 13 / 18),  # its rules over every item: stable AP@all
    ("legacy-calc-map-k", "map@all", "map@all", 13 / 18),  # k = None: every item, stable AP@all
    # the first min(1, R) relevant item wherever it ranks: label 0 at rank 1 (1), label 1 at rank 2 (1/2)
    ("legacy-calc-map-k@1", "map@1", "map@all", 5 / 6),
])
def test_eval_run_rescores_a_hand_computed_case(run_cli, tied_run, convention, metric, stored_metric, expected):
    folder, manifest = tied_run
    code, out, err = run_cli("eval", "--run", folder, "--dataset", manifest, "--metric-convention", convention,
                             "--json", "--device", "cpu")
    assert code == 0, err
    got = json.loads(out)
    assert got["convention"] == convention
    for d in ("i2t", "t2i"):
        row = got["directions"][d][metric]
        assert row["stored_metric"] == stored_metric and row["stored"] == pytest.approx(20 / 27)
        assert row["rescored"] == pytest.approx(expected, abs=1e-12)


def test_conventions_on_a_hamming_case():
    """One query (label 0) and four items at Hamming distances 0, 0, 2, 1, labels 1, 0, 0, 1.
    Stable: ranks r0, r1, r3, r2, relevant at 2 and 4: AP = (1/2 + 2/4)/2 = 1/2. Averaged: the
    first relevant item is at rank 1 or 2 (precision 1 or 1/2, mean 3/4), the second at rank 4
    (2/4): AP = (3/4 + 1/2)/2 = 5/8. DSCMR's k = number of queries = 1: the top item is
    irrelevant in retrieval order: 0."""
    from cmr_bench.evaluation.conventions import rescore

    q = np.array([[1, 1]])
    r = np.array([[1, 1], [1, 1], [-1, -1], [1, -1]])
    ql, rl = np.array([0]), np.array([1, 0, 0, 1])
    score = lambda name: rescore(q, r, ql, rl, similarity="hamming", convention=name, device="cpu")
    assert score("default")["map@all"] == pytest.approx(5 / 8) and score("default")["map@50"] == pytest.approx(5 / 8)
    assert score("legacy-djsrh")["map@50"] == pytest.approx(1 / 2)
    assert score("legacy-dscmr")["map@1"] == 0.0
    # calc_map_k@1: the first relevant item, wherever it ranks (rank 2): 1/2, where the top-1 conventions give 0
    assert score("legacy-calc-map-k@1")["map@1"] == pytest.approx(1 / 2)
    assert score("legacy-djsrh@1")["map@1"] == 0.0


def test_eval_run_bad_inputs_exit_2_with_one_line(run_cli, tied_run, tmp_path):
    folder, manifest = tied_run
    _one_line_error(*run_cli("eval", "--run", tmp_path / "nope"), "no run folder")
    _one_line_error(*run_cli("eval", "--run", folder, "--dataset", manifest, "--metric-convention", "legacy-foo"),
                    "unknown metric convention 'legacy-foo'")
    for bad in ("trec@0", "trec@ten", "legacy-djsrh@-5"):
        _one_line_error(*run_cli("eval", "--run", folder, "--dataset", manifest, "--metric-convention", bad),
                        "must be a positive integer or 'all'")
    _one_line_error(*run_cli("eval", "--run", folder, "--query", folder / "x.npy"), "drop --query")
    _one_line_error(*run_cli("eval", "--run", folder), "unknown dataset 'mydata'")
    from conftest import write_user_dataset

    other = write_user_dataset(tmp_path / "other", n_train=6, n_test=3, seed=5)
    _one_line_error(*run_cli("eval", "--run", folder, "--dataset", other), "made on other data")
    _one_line_error(*run_cli("eval", "--metric-convention", "legacy-djsrh", "--query", "q.npy", "--retrieval", "r.npy",
                             "--query-labels", "a.npy", "--retrieval-labels", "b.npy"), "applies only with --run")
    _one_line_error(*run_cli("eval", "--query", "q.npy"), "required: --retrieval")


def test_readme_reproduce_command_works_as_written(run_cli, real_root, tmp_path):
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Reproduce the paper"):]
    block = section[section.index("```bash\n") + 8:section.index("\n```", section.index("```bash\n"))].strip()
    assert block.startswith("cmr-bench reproduce sdcmr-tip2024 --dataset wiki")
    runs = tmp_path / "runs"
    code, out, err = run_cli("--data-root", real_root, *shlex.split(block)[1:], "--results-dir", runs, "--dry-run")
    assert code == 0, err
    assert "estimate: about" in out and "fig_sensitivity.png" in out and not runs.exists()


def test_a_tuned_grid_runs_the_configs_tune_wrote(run_cli, tmp_path):
    pytest.importorskip("optuna")
    tuned, runs = tmp_path / "tuned", tmp_path / "runs"
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "2", "--out", tuned)
    assert code == 0, out + err
    exp = tmp_path / "t.toml"
    exp.write_text('name = "t"\n[[grids]]\nmethods = ["cca"]\nconfig = "tuned"\n')
    code, out, err = run_cli("reproduce", exp, "--dataset", "synthetic", "--results-dir", runs, "--tuned-dir", tuned, "--no-progress")
    assert code == 0, out + err
    [folder] = _run_folders(runs)
    assert folder.parent.name.startswith("tuned-")
    assert json.loads((folder / "run.json").read_text())["spec"]["config_source"] == "tuned"
