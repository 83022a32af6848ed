"""Issue 14: tuned configs in runs and tables, tuning without the test split, progress, Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]


def one_line(code, err) -> bool:
    return code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def run_folders(results: Path, dataset="synthetic", method="cca") -> dict[str, dict]:
    """config folder name -> its seed-0 run.json"""
    base = results / dataset / "real" / method
    return {d.name: json.loads((d / "seed-0" / "run.json").read_text()) for d in sorted(base.iterdir())}


@pytest.fixture
def tuned_cca(run_cli, tmp_path):
    out = tmp_path / "tuned"
    code, stdout, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "3", "--out", out)
    assert code == 0, err
    return out


# ---- run --config tuned ----------------------------------------------------------------------------


def test_run_with_the_tuned_config_records_it_and_never_shares_the_default_folder(run_cli, tmp_path, tuned_cca):
    results = tmp_path / "runs"
    tuned = tomllib.loads((tuned_cca / "synthetic" / "cca.toml").read_text())
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--config", "tuned",
                             "--tuned-dir", tuned_cca, "--results-dir", results)
    assert code == 0, err
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results)
    assert code == 0, err
    folders = run_folders(results)
    assert len(folders) == 2
    name = next(n for n in folders if n.startswith("tuned-"))
    run = folders[name]
    assert run["spec"]["config_source"] == "tuned" and name == f"tuned-{run['spec']['config_hash']}"
    assert run["spec"]["config"] == tuned["config"]
    assert run["spec"]["tuned"]["file"].endswith("cca.toml") and run["spec"]["tuned"]["value"] == pytest.approx(tuned["value"])
    default = next(r for n, r in folders.items() if n.startswith("default-"))
    assert default["spec"]["config_source"] == "default"
    # `runs list` tells them apart (it once showed both as plain default runs)
    code, out, err = run_cli("runs", "list", "--results-dir", results, "--json")
    assert code == 0, err
    listed = sorted((r["config"], r["variant"], Path(r["folder"]).parent.name.split("-")[0]) for r in json.loads(out)["runs"])
    assert listed == [("default", "", "default"), ("tuned", "", "tuned")]
    code, out, err = run_cli("runs", "list", "--results-dir", results)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "config" in line.split())
    at = header.index(" config ") + 1  # the text table is aligned: read each run row under that header
    values = sorted(line[at:].split()[0] for line in out.splitlines() if " cca " in f" {line} ")
    assert values == ["default", "tuned"], out


def test_a_tuned_config_equal_to_the_defaults_is_still_its_own_run(tmp_path):
    """The source is part of the identity: a study may well pick the defaults."""
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.registry import get_method
    from cmr_bench.runner.grid import expand
    from cmr_bench.tuning import write_tuned

    ds = load_dataset("synthetic")
    cls = get_method("cca")
    write_tuned({"method": "cca", "dataset": "synthetic", "data": ds.training_view().fingerprint, "bits": None,
                 "value": 0.5, "trials": 1, "tuned": ["reg"], "config": cls.resolve_config({})}, tmp_path)
    default, = expand(["cca"], ds, [0])
    tuned, = expand(["cca"], ds, [0], config_source="tuned", tuned_dir=tmp_path)
    assert tuned.config == default.config
    assert tuned.config_hash != default.config_hash
    assert tuned.folder(tmp_path).parent != default.folder(tmp_path).parent


def test_tuned_config_errors_are_one_line(run_cli, tmp_path, tuned_cca):
    base = ["--dataset", "synthetic", "--results-dir", tmp_path / "runs"]
    code, out, err = run_cli("run", "--methods", "cca,random,dscmr", "--config", "tuned", "--tuned-dir", tuned_cca, *base)
    assert one_line(code, err) and "for random, dscmr (" in err, err  # every missing one named, the tuned one not
    code, out, err = run_cli("run", "--methods", "cca", "--config", "best", *base)
    assert one_line(code, err) and "--config" in err, err
    code, out, err = run_cli("run", "--methods", "cca", "--tuned-dir", tuned_cca, *base)
    assert one_line(code, err) and "--tuned-dir only applies" in err, err
    path = tuned_cca / "synthetic" / "cca.toml"
    text = path.read_text()
    for edit, message in [
        (text.replace("dims = 0", "dims = 3"), "changed since tuning"),  # an untuned key differs from today's default
        (text.replace('data = "', 'data = "0'), "other data"),
        (text.replace('method = "cca"', 'method = "cfa"'), "is for cfa"),
        (text + "\n[config]\nx = 1\n", "unreadable"),  # a second [config] table: not TOML
        (text.replace("[config]", "[config]\nnot_a_key = 1"), "no longer a hyperparameter"),
        ("value = 1", "malformed"),
    ]:
        path.write_text(edit)
        code, out, err = run_cli("run", "--methods", "cca", "--config", "tuned", "--tuned-dir", tuned_cca, *base)
        assert one_line(code, err) and message in err, (message, err)
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_binary_methods_are_tuned_per_code_length(tmp_path):
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.runner.grid import expand
    from cmr_bench.tuning import tuned_config, write_tuned
    from cmr_bench.registry import get_method

    ds = load_dataset("synthetic")
    cls = get_method("sdeh")
    config = cls.resolve_config({"lr": 0.005}, dataset="synthetic")
    write_tuned({"method": "sdeh", "dataset": "synthetic", "data": ds.training_view().fingerprint, "bits": 16,
                 "value": 0.5, "trials": 2, "tuned": ["lr"], "config": config}, tmp_path)
    assert tuned_config("sdeh", ds, 16, tmp_path)["lr"] == 0.005
    specs = expand(["sdeh"], ds, [0], bits=[16], config_source="tuned", tuned_dir=tmp_path)
    assert [s.config["lr"] for s in specs] == [0.005] and "tuned-16bits-" in str(specs[0].folder(tmp_path))
    with pytest.raises(CmrBenchError, match="sdeh at 32 bits"):
        expand(["sdeh"], ds, [0], bits=[16, 32], config_source="tuned", tuned_dir=tmp_path)


# ---- tables: default and tuned side by side ---------------------------------------------------------


def test_table_shows_default_and_tuned_columns_only_when_tuned_runs_exist(run_cli, tmp_path, tuned_cca):
    import pandas as pd

    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1", "--results-dir", results)
    assert code == 0, err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results, "--out", tmp_path / "t0")
    assert code == 0, err
    before = (tmp_path / "t0" / "table2.md").read_text()
    assert "Img2Txt" in before and "Tuned" not in before and "Default" not in before
    assert "tuned_img2txt_mean" not in pd.read_csv(tmp_path / "t0" / "table2.csv").columns

    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1", "--config", "tuned",
                             "--tuned-dir", tuned_cca, "--results-dir", results)
    assert code == 0, err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results, "--out", tmp_path / "t1")
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "t1" / "table2.csv")
    row = frame[frame["method"] == "CCA"].iloc[0] if "CCA" in set(frame["method"]) else frame[frame["plugin"] == "cca"].iloc[0]
    tuned = [json.loads((d / "metrics.json").read_text())["i2t"]["map@all"]
             for d in sorted((results / "synthetic" / "real" / "cca").glob("tuned-*/seed-*"))]
    default = [json.loads((d / "metrics.json").read_text())["i2t"]["map@all"]
               for d in sorted((results / "synthetic" / "real" / "cca").glob("default-*/seed-*"))]
    assert len(tuned) == len(default) == 2
    assert row["tuned_img2txt_mean"] == pytest.approx(np.mean(tuned), abs=1e-4)
    assert row["img2txt_mean"] == pytest.approx(np.mean(default), abs=1e-4) and row["tuned_runs"] == 2
    from cmr_bench.report.figures import _curves, _finished, _pr_points

    curves = _curves(list(_finished(results, "synthetic", "real", None)), _pr_points)
    assert {"CCA", "CCA (tuned)"} <= set(curves) and len(curves["CCA (tuned)"]["i2t"]) == 2  # never averaged together
    md = (tmp_path / "t1" / "table2.md").read_text()
    tex = (tmp_path / "t1" / "table2.tex").read_text()
    for header in ("Default Img2Txt", "Tuned Img2Txt", "Tuned Txt2Img", "Tuned Avg"):
        assert header in md
    assert "\\multicolumn{3}{c}{Default} & \\multicolumn{3}{c}{Tuned}" in tex  # LaTeX: a column block per config
    assert "cmr-bench tune" in md  # the note says what tuned means


# ---- the test split is never read while tuning ------------------------------------------------------


def split_files_dataset(folder: Path, seed=0) -> Path:
    """A user dataset whose train and test splits live in separate files (checksums recorded)."""
    from conftest import sha256

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", 80), ("test", 30)):
        labels = rng.integers(0, 3, size=n)
        centres = rng.normal(size=(3, 10))
        np.savez(folder / f"{split}.npz", image=(centres[labels, :6] + 0.5 * rng.normal(size=(n, 6))).astype(np.float32),
                 text=(centres[labels, 6:] + 0.5 * rng.normal(size=(n, 4))).astype(np.float32), labels=labels)
    arrays = "\n".join(f'[arrays.{s}]\nimage = {{ file = "{s}.npz", key = "image" }}\ntext = {{ file = "{s}.npz", key = "text" }}\n'
                       f'labels = {{ file = "{s}.npz", key = "labels" }}\n' for s in ("train", "test"))
    (folder / "manifest.toml").write_text(f'''name = "splitfiles"
label_kind = "single"
num_classes = 3

[[files]]
path = "train.npz"
sha256 = "{sha256(folder / 'train.npz')}"

[[files]]
path = "test.npz"
sha256 = "{sha256(folder / 'test.npz')}"

{arrays}
[split]
kind = "fixed"
sizes = {{ train = 80, test = 30 }}

[protocols.real]
train = "train"
query = "test"
retrieval = "test"
''')
    return folder / "manifest.toml"


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_tuning_never_reads_the_test_split(run_cli, tmp_path, damage):
    manifest = split_files_dataset(tmp_path / "ds")
    test_file = tmp_path / "ds" / "test.npz"
    if damage == "corrupt":
        test_file.write_bytes(b"\x00 not an npz file " * 50)
    else:
        test_file.unlink()
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", manifest, "--trials", "2", "--out", tmp_path / "t")
    assert code == 0, err
    assert (tmp_path / "t" / "splitfiles" / "cca.toml").is_file()
    # run keeps its full checks: the damaged test file is one line, exit 2
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", manifest, "--results-dir", tmp_path / "runs")
    assert one_line(code, err) and "test.npz" in err, err


def test_tuning_opens_only_the_training_files(run_cli, tmp_path, monkeypatch):
    """On intact data too: the loader's reads and checksums while tuning name train.npz only,
    and a run then applies the tuned config to the full data (same training fingerprint)."""
    from cmr_bench.data import loader

    manifest = split_files_dataset(tmp_path / "ds")
    opened = []
    read, digest = loader.read_array, loader.checked_sha256
    monkeypatch.setattr(loader, "read_array", lambda folder, spec: opened.append(spec.file) or read(folder, spec))
    monkeypatch.setattr(loader, "checked_sha256", lambda path, name: opened.append(Path(path).name) or digest(path, name))
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", manifest, "--trials", "2", "--out", tmp_path / "t")
    assert code == 0, err
    assert opened and set(opened) == {"train.npz"}
    opened.clear()
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", manifest, "--config", "tuned", "--tuned-dir", tmp_path / "t",
                             "--results-dir", tmp_path / "runs")
    assert code == 0, err
    assert "test.npz" in opened


# ---- progress -------------------------------------------------------------------------------------


def test_one_bar_per_study_on_a_tty_and_one_line_per_study_off_it(run_cli, tmp_path):
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    stream = io.StringIO()
    res = tune_method("cca", load_dataset("synthetic"), 3, f"sqlite:///{tmp_path / 's.db'}", progress=True, stream=stream)
    text = stream.getvalue()
    assert "synthetic/cca" in text and "3/3" in text and f"best {res['value']:.4f}" in text
    # off a TTY (captured output): no bar, no per-trial lines, one summary line per study
    code, out, err = run_cli("tune", "--methods", "cca,cfa", "--dataset", "synthetic", "--trials", "2", "--out", tmp_path / "t")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2 and "trial 1" not in out and "\r" not in out + err


# ---- Ctrl-C keeps every finished trial -------------------------------------------------------------

SLOW_PLUGIN = '''
import sys, time
import numpy as np
from cmr_bench import registry
from cmr_bench.plugin import Method, MethodInfo


class Slow(Method):
    name = "test-slow-tune"
    code_type = "real"
    info = MethodInfo("Slow", "test", "test", 2026, status="baseline")
    defaults = {"x": 0.5}
    search_space = {"x": ("float", 0.0, 1.0)}

    def fit(self, train, val=None):
        time.sleep(float(__import__("os").environ.get("SLOW_FIT_S", "0.5")))
        return []

    def encode(self, features, modality):
        return features[:, :3].astype(np.float32)


class SlowReporting(Slow):
    """Reports a validation score 20 times per fit, as a trainer method does for the pruner."""
    name = "test-slow-reporting"

    def fit(self, train, val=None):
        from cmr_bench.progress import validation_score

        for step in range(1, 21):
            time.sleep(float(__import__("os").environ.get("SLOW_FIT_S", "0.5")) / 20)
            validation_score(step, 0.5)
        return []


registry._load()
registry._add(Slow, "tests")
registry._add(SlowReporting, "tests")
'''


def count(db: Path, query: str = "select count(*) from trials where state = 'COMPLETE'") -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


RUNNING = "select count(*) from trials where state = 'RUNNING'"
INTERRUPTED = ("select count(*) from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
               "where t.state = 'FAIL' and a.key = 'interrupted'")


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a subprocess")
@pytest.mark.parametrize("jobs, method", [(1, "test-slow-tune"), (2, "test-slow-tune"), (2, "test-slow-reporting")])
def test_ctrl_c_mid_study_keeps_finished_trials_and_a_rerun_resumes_to_the_budget(tmp_path, jobs, method):
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
    db = tmp_path / "studies.db"
    argv = ["tune", "--methods", method, "--dataset", "synthetic", "--trials", "6", "--out", str(tmp_path / "t"),
            "--storage", f"sqlite:///{db}", "--jobs", str(jobs)]
    script = "import sys, slow_plugin\nfrom cmr_bench.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "SLOW_FIT_S": "0.8"}
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Ctrl-C inside a trial (its fit sleeps 0.8 s) after the first one is stored
    while not (count(db) >= 1 and count(db, RUNNING) >= 1) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    kept = count(db)
    assert 1 <= kept < 6 and count(db, RUNNING) == 0  # nothing left half-recorded
    # --jobs 1: the trial in flight is marked interrupted (rerun first). --jobs 2: a worker thread's
    # trial stops at its next validation report, marked interrupted too (it once ran to its end,
    # minutes for DSCMR, before Ctrl-C took effect); one that reports nothing finishes and is kept
    if jobs == 1:
        assert count(db, INTERRUPTED) == 1
    elif method == "test-slow-reporting":
        assert count(db, INTERRUPTED) >= 1
    else:
        assert count(db, INTERRUPTED) == 0
    assert not (tmp_path / "t" / "synthetic").exists()  # no tuned file from a stopped study
    # the study's wall time is kept across invocations (a resumed study once recorded only its last part)
    first = json.loads(count(db, "select value_json from study_user_attributes where key = 'seconds'"))
    assert first >= 0.8  # at least the one finished trial's fit

    env["SLOW_FIT_S"] = "0"
    rerun = subprocess.run([sys.executable, "-c", script, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert count(db) == 6  # resumed: the interrupted trial does not count against the budget
    assert tomllib.loads((tmp_path / "t" / "synthetic" / f"{method}.toml").read_text())["seconds"] >= round(first, 1)
    if jobs > 1:
        assert tomllib.loads((tmp_path / "t" / "synthetic" / f"{method}.toml").read_text())["trials"] == 6
        return
    # ... and it ran again first, with the values it was stopped with
    assert count(db, "select count(*) from trials t join trial_params p on p.trial_id = t.trial_id where t.state = 'COMPLETE' "
                     "and p.param_value = (select p2.param_value from trials t2 join trial_params p2 on p2.trial_id = t2.trial_id "
                     "where t2.state = 'FAIL')") == 1
    assert tomllib.loads((tmp_path / "t" / "synthetic" / "test-slow-tune.toml").read_text())["trials"] == 6


def test_the_hash_table_gives_tuned_runs_a_row_of_their_own(run_cli, tmp_path):
    import pandas as pd

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.registry import get_method
    from cmr_bench.tuning import write_tuned

    ds = load_dataset("synthetic")
    config = get_method("sdeh").resolve_config({"epochs": 2}, dataset="synthetic")  # a study that picked 2 epochs
    write_tuned({"method": "sdeh", "dataset": "synthetic", "data": ds.training_view().fingerprint, "bits": 16,
                 "value": 0.5, "trials": 1, "tuned": ["epochs"], "config": config}, tmp_path / "tuned")
    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "sdeh", "--dataset", "synthetic", "--bits", "16", "--config", "tuned",
                             "--tuned-dir", tmp_path / "tuned", "--results-dir", results)
    assert code == 0, err
    code, out, err = run_cli("table", "--table", "hash", "--dataset", "synthetic", "--results-dir", results, "--out", tmp_path / "t")
    assert code == 0, err
    frame = pd.read_csv(next((tmp_path / "t").glob("hash_*.csv")))
    row = frame[frame["method"] == "SDEH (tuned)"]
    assert len(row) == 1 and 0 < row["i2t_16_mean"].iloc[0] <= 1


def test_tune_splits_the_cpus_between_its_trial_threads(run_cli, tmp_path, monkeypatch):
    """--jobs N trials share the process: each gets usable_cpus // N torch threads, not every core."""
    import torch

    from cmr_bench.runner import environment

    before = torch.get_num_threads()
    monkeypatch.setattr(environment, "usable_cpus", lambda: 4)
    try:
        code, out, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "2", "--jobs", "2",
                                 "--out", tmp_path / "t")
        assert code == 0, err
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_curve_figures_draw_all_or_only_default_or_tuned_runs(run_cli, tmp_path, tuned_cca):
    """Tuned runs get curves of their own; the paper's Fig. 3 (sdcmr-tip2024) draws the defaults
    only (with 20 tuned methods its legend doubled and the colours repeated)."""
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.experiment import load_experiment
    from cmr_bench.report import figures

    results = tmp_path / "runs"
    for extra in ((), ("--config", "tuned", "--tuned-dir", str(tuned_cca))):
        code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, *extra)
        assert code == 0, err
    labels = {c: sorted(figures._curves(figures._groups(results, "synthetic", "real", None, c)[("real", None)], figures._pr_points))
              for c in ("all", "default", "tuned")}
    assert labels == {"all": ["CCA", "CCA (tuned)"], "default": ["CCA"], "tuned": ["CCA (tuned)"]}
    code, out, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", results, "--config", "tuned",
                             "--out", tmp_path / "pr.png")
    assert code == 0 and (tmp_path / "pr.png").is_file(), err
    code, out, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", results, "--config", "best",
                             "--out", tmp_path / "x.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "default" in err
    assert load_experiment("sdcmr-tip2024").figures[0].options["config"] == "default"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[grids]]\nmethods = ["cca"]\n[[figures]]\nfigure = "code-length"\nconfig = "tuned"\n')
    with pytest.raises(CmrBenchError, match="config applies to the pr and precision-at-r figures"):
        load_experiment(str(bad))
