"""The runner end to end on synthetic data: store layout, resume, determinism, failures,
tables and figures. The real-data run is in test_real_runs.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmr_bench import registry
from cmr_bench.plugin import Method, MethodInfo
from registering import registered
from registering import sign_method as make_sign


@pytest.fixture
def grid(run_cli, tmp_path):
    results = tmp_path / "runs"

    def run(*extra, methods="cca,random", dataset="synthetic"):
        return run_cli("run", "--methods", methods, "--dataset", dataset, "--results-dir", results, "--no-progress", *extra)

    run.results = results
    return run


def _run_folders(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.rglob("run.json") if not any(s.startswith(".") for s in p.parts))


def test_run_stores_everything_a_run_needs(grid):
    code, out, err = grid("--seeds", "0,1")
    assert code == 0, out + err
    folders = _run_folders(grid.results)
    assert len(folders) == 4
    run = json.loads((folders[0] / "run.json").read_text())
    assert run["status"] == "done"
    assert run["spec"]["config"] and run["spec"]["config_hash"] and "seed" in run["spec"]
    env = run["environment"]
    assert {"torch", "numpy", "python", "cmr_bench", "device", "git"} <= set(env)
    assert "commit" in env["git"] and "dirty" in env["git"]
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    for d in ("i2t", "t2i"):
        assert {"map@all", "map@50", "p@50", "pr_curve"} <= set(metrics[d])
        assert 0.0 <= metrics[d]["map@all"] <= 1.0
    arrays = np.load(folders[0] / "arrays.npz")
    assert {"split_train_indices", "split_query_indices", "split_retrieval_indices", "codes_query_image",
            "per_query_ap_i2t"} <= set(arrays.files)
    assert len(arrays["per_query_ap_i2t"]) == len(arrays["split_query_indices"])
    assert (folders[0] / "log.jsonl").read_text().strip()
    assert "cca" in out and "map@all" in out  # summary table


def test_second_invocation_runs_nothing_and_force_reruns(grid):
    assert grid("--seeds", "0")[0] == 0
    before = {p: (p / "run.json").stat().st_mtime_ns for p in _run_folders(grid.results)}
    code, out, _ = grid("--seeds", "0")
    assert code == 0 and "2 already finished, 0 to run" in out
    assert before == {p: (p / "run.json").stat().st_mtime_ns for p in _run_folders(grid.results)}
    code, out, _ = grid("--seeds", "0", "--force")
    assert code == 0 and "0 already finished, 2 to run" in out


def test_same_seed_same_numbers(run_cli, tmp_path):
    outs = []
    for name in ("a", "b"):
        code, _, _ = run_cli("run", "--methods", "cca,random", "--dataset", "synthetic", "--seeds", "3",
                             "--results-dir", tmp_path / name, "--no-progress")
        assert code == 0
        outs.append({p.relative_to(tmp_path / name): json.loads((p / "metrics.json").read_text())
                     for p in _run_folders(tmp_path / name)})
    assert outs[0] == outs[1]


def test_ceiling_from_labels_is_one_and_random_is_low(grid):
    from cmr_bench.report.tables import _label_ceiling

    code, out, _ = grid("--seeds", "0", methods="random")
    assert code == 0
    (folder,) = _run_folders(grid.results)
    assert json.loads((folder / "metrics.json").read_text())["i2t"]["map@all"] < 0.5
    # the ceiling is no plugin: the table code scores the labels themselves
    assert _label_ceiling("synthetic", None, "map@all") == pytest.approx((1.0, 1.0))


def test_all_excludes_methods_marked_out_of_all(grid):
    from cmr_bench.registry import all_methods

    hidden = [n for n, c in all_methods().items() if not c.in_all]
    code, out, _ = grid("--dry-run", "--seeds", "0", methods="all")
    assert code == 0 and "cca" in out
    assert all(f" {n} " not in out for n in hidden)


def test_dry_run_lists_and_runs_nothing(grid):
    code, out, _ = grid("--dry-run", "--seeds", "0-2")
    assert code == 0 and out.count("pending") == 6 and "6 runs" in out
    assert not grid.results.exists()


@pytest.fixture
def diverging_method():
    class Diverging(Method):
        name = "test-diverging"
        info = MethodInfo("Diverging", "test", "test", 2026, status="baseline")
        defaults = {"mode": "nan"}

        def fit(self, train, val=None):
            if self.config["mode"] == "raise":
                raise RuntimeError("boom")
            return [{"step": 0, "loss": float("nan")}] if self.config["mode"] == "nan-loss" else [{"step": 0}]

        def encode(self, features, modality):
            return np.full((len(features), 3), np.nan, dtype=np.float32)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    with registered(Diverging):
        yield Diverging


@pytest.mark.parametrize("mode, reason", [("nan", "NaN"), ("nan-loss", "diverged"), ("raise", "RuntimeError: boom")])
def test_failed_run_is_recorded_and_grid_goes_on(grid, diverging_method, mode, reason):
    code, out, _ = grid("--seeds", "0", "--set", f"mode={mode}", methods="test-diverging,cca")
    assert code == 1 and "1 run(s) failed" in out
    runs = {json.loads((f / "run.json").read_text())["spec"]["method"]: json.loads((f / "run.json").read_text())
            for f in _run_folders(grid.results)}
    assert runs["cca"]["status"] == "done"
    assert runs["test-diverging"]["status"] == "failed" and reason in runs["test-diverging"]["reason"]
    # a failed run is retried on the next invocation; the finished one is not
    _, out, _ = grid("--seeds", "0", "--set", f"mode={mode}", methods="test-diverging,cca")
    assert "1 already finished, 1 to run" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--methods", "ccaa", "--dataset", "synthetic"], "did you mean cca"),
        (["--methods", "cca", "--dataset", "synthetc"], "did you mean synthetic"),
        (["--methods", "cca", "--dataset", "synthetic", "--seeds", "x"], "--seeds"),
        (["--methods", "cca", "--dataset", "synthetic", "--bits", "0"], "--bits"),
        (["--methods", "cca", "--dataset", "synthetic", "--set", "nosuch=1"], "nosuch"),
        (["--methods", "cca", "--dataset", "synthetic", "--set", "cca.nosuch=1"], "nosuch"),
        (["--methods", "cca", "--dataset", "synthetic", "--protocol", "hsah"], "no protocol 'hsah'"),
        (["--methods", "zz*", "--dataset", "synthetic"], "no method matches"),
        (["--methods", "cca", "--dataset", "synthetic", "--device", "tpu"], "unknown device"),
    ],
)
def test_bad_run_arguments_one_line_exit_2(run_cli, tmp_path, args, expected):
    code, out, err = run_cli("run", *args, "--results-dir", tmp_path / "runs")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_cuda_request_without_gpu_is_a_clear_error(run_cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--device", "cuda", "--results-dir", tmp_path)
    assert code == 2 and "no CUDA device" in err


def test_globs_and_lists_resolve_in_order():
    assert registry.resolve_methods("random,cca,random") == ["random", "cca"]
    assert "cca" in registry.resolve_methods("c*")


def test_duplicate_plugin_name_is_an_error():
    from cmr_bench.errors import CmrBenchError

    class Other(Method):
        name = "cca"
        info = MethodInfo("x", "x", "x", 1)

    with pytest.raises(CmrBenchError, match="duplicate method name 'cca'"):
        registry._add(Other, "tests")


def test_overrides_change_the_config_hash_and_folder(grid):
    assert grid("--seeds", "0", methods="cca")[0] == 0
    assert grid("--seeds", "0", "--set", "reg=0.01", methods="cca")[0] == 0
    runs = [json.loads((f / "run.json").read_text())["spec"] for f in _run_folders(grid.results)]
    assert len({r["config_hash"] for r in runs}) == 2
    assert {r["config"]["reg"] for r in runs} == {1e-4, 0.01}


def test_table_and_plot_from_stored_runs(grid, run_cli, tmp_path):
    assert grid("--seeds", "0,1")[0] == 0
    out_dir = tmp_path / "tables"
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", grid.results, "--out", out_dir)
    # synthetic has no published Table II rows, but our methods are still listed
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"table2.csv", "table2.tex", "table2.md"}
    import pandas as pd

    df = pd.read_csv(out_dir / "table2.csv")
    row = df[df["method"] == "CCA"].iloc[0]
    assert row["runs"] == 2 and 0 < row["img2txt_mean"] <= 1
    assert "\\toprule" in (out_dir / "table2.tex").read_text()
    png = tmp_path / "pr.png"
    code, out, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", grid.results, "--out", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli("plot", "precision-at-r", "--dataset", "synthetic", "--results-dir", grid.results, "--out", tmp_path / "p.png")
    assert code == 0, err


def test_table_marks_missing_methods(run_cli, tmp_path, real_root):
    """Wiki Table II with no runs: every row present, ours shown as not run / no plugin."""
    code, out, err = run_cli("table", "--table", "2", "--dataset", "wiki", "--results-dir", tmp_path / "none",
                             "--out", tmp_path / "t", "--format", "csv", "--no-reference")  # not the committed archive's rows
    assert code == 0, err
    import pandas as pd

    df = pd.read_csv(tmp_path / "t" / "table2.csv")
    # every Table II row has a plugin since issue 13: a row without runs reads "not run"
    assert len(df[df["method"] == "Corr-AE"]) == 1 and df[df["method"] == "Corr-AE"]["status"].iloc[0] == "not run"
    assert (df[df["method"].isin(["CMDN", "Deep-SM", "MCSM", "CM-GAN", "TANSS", "CAAL"])]["status"] == "not run").sum() == 6
    assert df[df["method"] == "CCA"]["status"].iloc[0] == "not run"
    assert df[df["method"] == "CFA"]["status"].iloc[0] == "not run"
    # published on wiki's own features: its own column, apart from the paper's VGG-19 one
    jfssl = df[df["method"] == "JFSSL"].iloc[0]
    assert jfssl["same_features_img2txt"] == pytest.approx(0.3063) and pd.isna(jfssl["paper_img2txt"])
    assert df[df["method"] == "SDCMR"]["paper_img2txt"].iloc[0] == pytest.approx(0.683)


def test_plot_without_runs_is_a_clear_error(run_cli, tmp_path):
    code, _, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", tmp_path / "none")
    assert code == 2 and "no finished runs" in err


def test_tables_leave_out_a_hand_edited_run(grid, run_cli, tmp_path):
    """A run whose metrics were edited after it was written fails its recorded checksum and
    never reaches a table; the warning names it."""
    assert grid("--seeds", "0,1", methods="cca")[0] == 0
    folders = _run_folders(grid.results)
    metrics_file = folders[0] / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["i2t"]["map@all"] = 0.999
    metrics_file.write_text(json.dumps(metrics))
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", grid.results,
                             "--out", tmp_path / "t", "--format", "csv")
    assert code == 0 and "skipping corrupt run" in err
    import pandas as pd

    row = pd.read_csv(tmp_path / "t" / "table2.csv").set_index("method").loc["CCA"]
    assert row["runs"] == 1 and row["img2txt_mean"] < 0.99


# --- threads, determinism across --jobs, progress (issue 19 items 1-2; issue 18 determinism) ---

def _stored_runs(results: Path) -> dict:
    out = {}
    for folder in _run_folders(results):
        run = json.loads((folder / "run.json").read_text())
        with np.load(folder / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        out[(run["spec"]["method"], run["spec"]["seed"])] = (run, json.loads((folder / "metrics.json").read_text()),
                                                            arrays, folder.relative_to(results))
    return out


def test_jobs_2_reproduces_jobs_1_for_a_torch_method(run_cli, tmp_path):
    """Runs use one torch thread whatever --jobs is and whatever the calling process had, so a
    grid resumed with another --jobs does not mix arithmetic."""
    import torch

    grid = ["run", "--methods", "acmr", "--dataset", "synthetic", "--seeds", "0,1", "--set", "acmr.epochs=2", "--no-progress"]
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a process whose own default differs from the runs' count
    try:
        code, out, err = run_cli(*grid, "--results-dir", tmp_path / "j1")
        assert code == 0, out + err
        assert torch.get_num_threads() == 3  # restored after the grid
    finally:
        torch.set_num_threads(before)
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cmr_bench.cli", *grid, "--results-dir", str(tmp_path / "j2"), "--jobs", "2"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two = _stored_runs(tmp_path / "j1"), _stored_runs(tmp_path / "j2")
    assert set(one) == set(two) == {("acmr", 0), ("acmr", 1)}
    for key, (run, metrics, arrays, rel) in one.items():
        o_run, o_metrics, o_arrays, o_rel = two[key]
        assert run["environment"]["torch_threads"] == o_run["environment"]["torch_threads"] == 1
        assert run["runner"]["executor"] == "inline" and o_run["runner"]["executor"] == "process"
        assert rel == o_rel and metrics == o_metrics, key
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], o_arrays[name], err_msg=f"{key} {name}")


def test_threads_other_than_one_are_part_of_the_run_identity(grid):
    code, out, err = grid("--seeds", "0", "--threads", "2", methods="cca")
    assert code == 0, out + err
    code, out, err = grid("--seeds", "0", methods="cca")
    assert "0 already finished, 1 to run" in out  # one thread is another run
    folders = _run_folders(grid.results)
    assert len(folders) == 2
    threads = sorted(json.loads((f / "run.json").read_text())["environment"]["torch_threads"] for f in folders)
    assert threads == [1, 2]
    assert any(f.parent.name.startswith("default-t2-") for f in folders)
    assert grid("--threads", "0")[0] == 2


def test_dry_run_prints_an_estimate(grid):
    code, out, _ = grid("--seeds", "0,1", "--dry-run", methods="cca,acmr")
    assert code == 0
    from cmr_bench.runner.estimate import WIKI_SECONDS

    assert "estimate: about" in out and "the 4 run(s) to do" in out
    seconds = 2 * WIKI_SECONDS["cca"] + 2 * WIKI_SECONDS["acmr"]
    from cmr_bench.runner.display import _duration

    assert _duration(seconds) in out


def test_estimate_packs_runs_onto_workers():
    from types import SimpleNamespace

    from cmr_bench.runner.estimate import WIKI_SECONDS, grid_estimate

    specs = [SimpleNamespace(method="dscmr"), SimpleNamespace(method="acmr"), SimpleNamespace(method="nosuch")]
    one, unknown = grid_estimate(specs)
    assert one == WIKI_SECONDS["dscmr"] + WIKI_SECONDS["acmr"] and unknown == ["nosuch"]
    assert grid_estimate(specs, workers=2)[0] == WIKI_SECONDS["dscmr"]


@pytest.fixture
def stepping_method():
    """A method that reports 4 epochs through its progress hook, like the shared trainer."""
    import time

    class Stepping(Method):
        name = "test-stepping"
        info = MethodInfo("Stepping", "test", "test", 2026, status="baseline")
        defaults = {"sleep_s": 0.15}

        def fit(self, train, val=None):
            for i in range(4):
                time.sleep(self.config["sleep_s"])
                self.hooks.training_step(i + 1, 4, 2.0 / (i + 1))
            return [{"step": 0, "loss": 0.5}]

        def encode(self, features, modality):
            return np.asarray(features[:, :3], dtype=np.float32)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    with registered(Stepping):
        yield Stepping


def test_progress_lines_off_a_tty(grid, stepping_method, monkeypatch):
    monkeypatch.setenv("CMR_BENCH_HEARTBEAT_S", "0.1")
    code, out, err = grid("--seeds", "0", methods="test-stepping")
    assert code == 0, out + err
    beats = [line for line in out.splitlines() if line.strip().startswith("... ") and "test-stepping" in line]
    assert beats, out
    assert any("epoch " in line and "/4, loss " in line and "elapsed" in line and "left" in line for line in beats), beats


def test_progress_bar_on_a_tty(grid, stepping_method):
    code, out, err = grid("--seeds", "0", "--progress", methods="test-stepping")
    assert code == 0, out + err
    assert "4/4" in out and "loss 0.5" in out and "grid" in out  # the run's bar: epochs, latest loss


def test_progress_reaches_the_parent_from_worker_processes(plugin_site, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(plugin_site), "CMR_BENCH_HEARTBEAT_S": "0.2", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "cmr_bench.cli", "run", "--methods", "example-chaos", "--dataset", "synthetic",
                           "--seeds", "0,1", "--set", "example-chaos.sleep_s=2", "--set", "example-chaos.steps=4",
                           "--jobs", "2", "--results-dir", str(tmp_path / "runs"), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    beats = [line for line in proc.stdout.splitlines() if "example-chaos" in line and "epoch " in line]
    assert any("/4, loss " in line for line in beats), proc.stdout


# --- tables and figures a user makes (issue 19 items 4-8, 10) -----------------------------------

@pytest.fixture
def sign_method():
    """A cheap binary method (registering.sign_method) as the plugin test-sign."""
    with registered(make_sign("test-sign")) as cls:
        yield cls


@pytest.fixture
def mixed_store(grid, sign_method):
    """cca (real, 2 seeds), random (real, 1 seed), test-sign (hash, 16 and 128 bits, 1 seed)."""
    assert grid("--seeds", "0,1", methods="cca")[0] == 0
    assert grid("--seeds", "0", methods="random")[0] == 0
    code, out, err = grid("--seeds", "0", "--bits", "16,128", methods="test-sign")
    assert code == 0, out + err
    return grid.results


def test_table_goes_to_the_users_folder_and_takes_a_manifest_path(mixed_store, run_cli, tmp_path):
    import shutil

    from cmr_bench.data.manifest import builtin_manifest_paths

    manifest = tmp_path / "my" / "manifest.toml"
    manifest.parent.mkdir()
    shutil.copy(builtin_manifest_paths()["synthetic"], manifest)
    code, out, err = run_cli("table", "--table", "2", "--dataset", manifest, "--results-dir", mixed_store, "--format", "md,csv")
    assert code == 0, err
    where = mixed_store / "_out" / "synthetic"  # the manifest's name, never a folder named manifest.toml
    assert {p.name for p in where.iterdir()} == {"table2.md", "table2.csv"}
    assert out.strip().splitlines()[-1] == f"output: {where}"
    import pandas as pd

    df = pd.read_csv(where / "table2.csv").set_index("method")
    assert df.loc["CCA", "runs"] == 2 and df.loc["Random", "runs"] == 1  # read the runs: not "not run"
    md = (where / "table2.md").read_text()
    cca = next(line for line in md.splitlines() if line.startswith("| CCA"))
    rnd = next(line for line in md.splitlines() if line.startswith("| Random"))
    assert "±" in cca and "±" not in rnd  # one run: no spread to print
    assert "nan" not in md
    avg = [c.strip() for c in rnd.strip("|").split("|")][3]
    assert len(avg.split(".")[1]) == 3, rnd  # three decimals as formatted, not re-parsed as a number


def test_runs_list_and_clean_take_a_manifest_path_like_run(mixed_store, run_cli, tmp_path):
    import shutil

    from cmr_bench.data.manifest import builtin_manifest_paths

    manifest = tmp_path / "my" / "manifest.toml"
    manifest.parent.mkdir()
    shutil.copy(builtin_manifest_paths()["synthetic"], manifest)
    code, out, err = run_cli("runs", "list", "--dataset", manifest, "--results-dir", mixed_store, "--json")
    assert code == 0, err
    import json

    rows = json.loads(out)["runs"]
    code, out, err = run_cli("runs", "list", "--dataset", "synthetic", "--results-dir", mixed_store, "--json")
    assert code == 0, err
    assert rows == json.loads(out)["runs"] and rows and {r["dataset"] for r in rows} == {"synthetic"}
    code, out, err = run_cli("runs", "clean", "--dataset", manifest, "--results-dir", mixed_store, "--dry-run")
    assert code == 0, err
    assert not (mixed_store / "manifest.toml").exists()


def test_hash_table_has_n_and_numeric_bit_order(mixed_store, run_cli, tmp_path):
    code, out, err = run_cli("table", "--table", "hash", "--dataset", "synthetic", "--results-dir", mixed_store,
                             "--out", tmp_path / "t", "--format", "md", "--hide-missing")
    assert code == 0, err
    header = next(line for line in (tmp_path / "t" / "hash_mapall.md").read_text().splitlines() if line.startswith("| Method"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["Method", "I→T 16", "I→T 16 95% CI", "T→I 16", "T→I 16 95% CI",
                    "I→T 128", "I→T 128 95% CI", "T→I 128", "T→I 128 95% CI", "n"]  # CI beside each value
    row = next(line for line in (tmp_path / "t" / "hash_mapall.md").read_text().splitlines() if line.startswith("| test-sign"))
    assert row.rstrip(" |").endswith("1") and "±" not in row
    assert "ssah" not in out  # --hide-missing: no row without runs


def test_latex_fits_a_two_column_paper(mixed_store, run_cli, tmp_path):
    code, _, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", mixed_store,
                           "--out", tmp_path / "t", "--format", "latex", "--hide-missing")
    assert code == 0, err
    tex = (tmp_path / "t" / "table2.tex").read_text()
    assert "\\begin{table*}" in tex and "\\resizebox" not in tex and "\\label{tab:table2-synthetic}" in tex
    assert "\\caption{MAP of cross-modal retrieval (synthetic)}" in tex  # LaTeX numbers it: no "Table II:" inside
    rows = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert len(rows) == 1 + 2 + 1  # header, the two methods with runs, the label ceiling
    _compile(tex, tmp_path)


def _compile(tex: str, tmp_path: Path) -> None:
    """pdflatex on a two-column article holding the table, when pdflatex and booktabs are here."""
    import shutil
    import subprocess

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    if subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).returncode != 0:
        pytest.skip("booktabs.sty is not installed (apt-get install texlive-latex-recommended)")
    doc = tmp_path / "paper.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   "\\usepackage{graphicx}\n\\begin{document}\nText.\n" + tex + "\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in proc.stdout, proc.stdout[-3000:]


def test_table_can_include_runs_made_with_set(grid, run_cli, tmp_path):
    assert grid("--seeds", "0", methods="cca")[0] == 0
    assert grid("--seeds", "0", "--set", "cca.reg=0.01", methods="cca")[0] == 0
    folders = [f.parent.name for f in _run_folders(grid.results)]
    assert any(name.startswith("default-set-reg-0-01-") for name in folders), folders  # the folder says what was set
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", grid.results,
                             "--out", tmp_path / "a", "--format", "csv")
    import pandas as pd

    assert "reg=0.01" not in out  # paper tables: the published configuration only
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", grid.results,
                             "--out", tmp_path / "b", "--format", "csv", "--include-overrides")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "b" / "table2.csv").set_index("method")
    assert df.loc["CCA", "runs"] == 1 and df.loc["CCA {reg=0.01}", "runs"] == 1
    assert df.loc["CCA", "img2txt_mean"] != df.loc["CCA {reg=0.01}", "img2txt_mean"]


def test_plot_pr_one_figure_per_protocol_and_code_length(mixed_store, run_cli, tmp_path):
    code, out, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", mixed_store)
    assert code == 0, err
    where = mixed_store / "_out" / "synthetic"
    assert {p.name for p in where.glob("*.png")} == {"fig_pr_real.png", "fig_pr_hash_16bits.png", "fig_pr_hash_128bits.png"}
    assert f"output: {where}" in out
    code, out, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", mixed_store, "--bits", "16",
                             "--protocol", "hash", "--out", tmp_path / "one.png")
    assert code == 0 and (tmp_path / "one.png").is_file() and out.count("wrote") == 1


def test_pr_figure_title_legend_and_styles(mixed_store, tmp_path, monkeypatch):
    """The protocol in the title, the legend outside both panels, no two curves alike."""
    import matplotlib.pyplot as plt

    from cmr_bench.report import figures

    seen = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: seen.setdefault(out.name, fig) and out)
    figures.plot_pr(mixed_store, "synthetic", tmp_path / "pr.png", protocol="real")
    fig = seen["pr.png"]
    assert "protocol 'real'" in fig._suptitle.get_text()
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and len({(str(ln.get_color()), ln.get_linestyle()) for ln in lines}) == 2
    plt.close(fig)
    styles = {(figures._style(i)["color"], figures._style(i)["linestyle"]) for i in range(40)}
    assert len(styles) == 40


def test_plot_curves_and_tensorboard(grid, stepping_method, run_cli, tmp_path, monkeypatch):
    assert grid("--seeds", "0,1", "--set", "sleep_s=0", methods="test-stepping")[0] == 0
    config = _run_folders(grid.results)[0].parent
    png = tmp_path / "c.png"
    code, out, err = run_cli("plot", "curves", config, "--out", png)  # a config folder: all its seeds
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli("plot", "curves", tmp_path / "nothing")
    assert code == 2 and "no such run folder" in err
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)
    code, _, err = run_cli("plot", "curves", config, "--out", png, "--tensorboard", tmp_path / "tb")
    assert code == 2 and 'pip install "cmr-bench[tensorboard]"' in err and len(err.strip().splitlines()) == 1


def test_plot_curves_writes_tensorboard_events(grid, stepping_method, run_cli, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is not installed (optional extra: pip install \"cmr-bench[tensorboard]\")")
    assert grid("--seeds", "0", "--set", "sleep_s=0", methods="test-stepping")[0] == 0
    code, out, err = run_cli("plot", "curves", _run_folders(grid.results)[0], "--out", tmp_path / "c.png", "--tensorboard", tmp_path / "tb")
    assert code == 0, err
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_dirty_flag_counts_untracked_code(tmp_path):
    import subprocess

    from cmr_bench.runner.environment import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "notes.txt").write_text("not code\n")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "methods" / "mine.py").write_text("class Mine: ...\n")  # a new in-tree plugin
    assert git_state(tmp_path)["dirty"] is True


def test_every_option_has_help_text():
    import argparse

    from cmr_bench.cli import build_parser

    missing = []

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, prefix + [name])
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and not action.help:
                missing.append(f"{' '.join(prefix)} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), [])
    assert not missing, missing


def test_data_info_prints_no_empty_parts(run_cli):
    code, out, err = run_cli("data", "info", "synthetic")
    assert code == 0, err
    assert "()" not in out and not any(line.strip() in ("source:", "source: ") for line in out.splitlines())


def test_runs_list_shows_overrides_and_the_summary_separates_protocols(grid, sign_method, run_cli):
    code, out, err = grid("--seeds", "0", "--bits", "16", "--set", "cca.reg=0.01", methods="cca,test-sign")
    assert code == 0, out + err
    assert "protocol 'real'" in out and "protocol 'hash'" in out
    sections = {part.split("'")[0]: part for part in out.split("protocol '")[1:]}
    assert "cca" in sections["real"] and "test-sign" not in sections["real"]
    assert "test-sign" in sections["hash"] and "cca" not in sections["hash"]
    assert "±" not in out  # one run each: no spread
    code, out, err = run_cli("runs", "list", "--results-dir", grid.results)
    assert code == 0, err
    cca = next(line for line in out.splitlines() if " cca " in line)
    assert "reg=0.01" in cca


def test_usable_cpus_follow_affinity_and_cgroup_quota(tmp_path):
    import os

    from cmr_bench.runner.environment import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # a quota of one CPU
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # half a CPU (v1): at least one
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


def test_jobs_auto_is_one_worker_per_usable_cpu(grid, monkeypatch):
    from cmr_bench.runner import environment

    monkeypatch.setattr(environment, "usable_cpus", lambda: 3)
    code, out, _ = grid("--seeds", "0-5", "--jobs", "auto", "--dry-run", methods="cca")
    assert code == 0 and "in 3 local processes, 1 torch thread(s) each" in out
    code, out, _ = grid("--seeds", "0", "--jobs", "auto", "--dry-run", methods="cca")
    assert code == 0 and "in this process" in out  # never more workers than runs to do
