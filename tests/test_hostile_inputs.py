"""Issue 18, the other classes: hostile manifests, data files, store files, HTTP servers and
option values. Each case: one line on stderr, exit 2, no traceback, no hang, nothing of
another dataset in a table, and no finished result lost."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import sha256, write_user_dataset
from test_bad_input import assert_one_line, snapshot
from registering import registered

# --- manifests ---------------------------------------------------------------------------------

SYNTH = '''name = "tiny"
label_kind = "single"
num_classes = 3
[synthetic]
{synthetic}
[split]
kind = "synthetic"
[protocols.real]
train = "train"
query = "test"
retrieval = "test"
'''


def _synth(**params) -> str:
    body = {"n_train": 30, "n_test": 10, "image_dim": 6, "text_dim": 4, **params}
    return SYNTH.format(synthetic="\n".join(f"{k} = {v}" for k, v in body.items() if v is not None))


def _user(folder: Path, old: str = "", new: str = "") -> str:
    text = write_user_dataset(folder).read_text()
    assert old in text
    return text.replace(old, new, 1)


MANIFESTS = {
    "protocols not tables": lambda f: _user(f, '[protocols.real]\ntrain = "train"\nquery = "test"\nretrieval = "test"\n',
                                            "[protocols]\nreal = 5\n"),
    "synthetic not a table": lambda f: SYNTH.replace("[synthetic]\n{synthetic}\n", "synthetic = 5\n"),
    "num_classes 10**12": lambda f: _user(f, "num_classes = 3", "num_classes = 1000000000000"),
    "offset 2**70": lambda f: _user(f, 'key = "train_labels" }', 'key = "train_labels", offset = 1180591620717411303424 }'),
    "column huge": lambda f: _user(f, 'key = "train_labels" }', 'key = "train_labels", column = 99999999 }'),
    "synthetic n_train 10**13": lambda f: _synth(n_train=10**13),
    "synthetic n_train 0": lambda f: _synth(n_train=0),
    "synthetic image_dim 0": lambda f: _synth(image_dim=0),
    "synthetic noise nan": lambda f: _synth(noise="nan"),
    "synthetic noise inf": lambda f: _synth(noise="inf"),
    "synthetic unknown key": lambda f: _synth(name='"x"'),
    "synthetic huge cells": lambda f: _synth(n_train=10**6, image_dim=10**4),
    "synthetic 100,000 classes": lambda f: _synth().replace("num_classes = 3", "num_classes = 100000"),
    "fixed split without sizes": lambda f: _user(f, "sizes = { train = 30, test = 12 }", ""),
    "split size 0": lambda f: _user(f, "test = 12", "test = 0"),
    "sampled query 0": lambda f: _user(f, 'kind = "fixed"', 'kind = "sampled"\nseed = 0\nquery = 0\ntrain = 5'),
    "sha256 not hex": lambda f: _user(f, 'sha256 = "', 'sha256 = "zz'),
    "fetch not a bool": lambda f: _user(f, 'sha256 = "', 'fetch = "yes"\nsha256 = "'),
    "base_url file scheme": lambda f: "[source]\nbase_url = \"file:///etc/\"\n" + _user(f),
    "nested 5000 deep": lambda f: "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "not utf-8": lambda f: b"name = \"\xff\xfe\"\n",
    "huge file": lambda f: "# " + "x" * (2 << 20) + "\n",
}


@pytest.mark.parametrize("case", list(MANIFESTS))
@pytest.mark.parametrize("command", ["info", "verify", "list"])
def test_bad_manifest_is_one_line_and_does_not_break_data_list(tmp_path, run_cli, case, command):
    folder = tmp_path / "root" / "bad"
    folder.mkdir(parents=True)
    text = MANIFESTS[case](tmp_path / "src")
    path = folder / "manifest.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    if command == "list":  # a bad manifest in the data root: the others are still listed
        code, out, err = run_cli("--data-root", tmp_path / "root", "data", "list")
        assert code == 0 and "Traceback" not in err, err
        assert "synthetic" in out and "wiki" in out and "malformed" in out
    else:
        code, out, err = run_cli("--data-root", tmp_path / "root", "data", command, path)
        assert_one_line(code, err)


def test_unreadable_manifest_is_one_line(tmp_path, run_cli):
    path = tmp_path / "m.toml"
    path.mkdir()  # a folder where the file belongs: unreadable as root too
    code, out, err = run_cli("data", "info", path)
    assert_one_line(code, err)


@pytest.mark.parametrize("name", ["x" * 300, "a\x00b", "a\x00b.toml"])
def test_odd_dataset_arguments_are_one_line(tmp_path, run_cli, name):
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", name, "--results-dir", tmp_path / "r", "--no-progress")
    assert_one_line(code, err)
    assert not (tmp_path / "r").exists()


# --- user errors in the data or the options: before the grid, never a stored failed run ------

def _run_user_error(run_cli, tmp_path, dataset, *extra, expected=None):
    results = tmp_path / "results"
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", dataset, "--results-dir", results, "--no-progress", *extra)
    assert_one_line(code, err, expected)
    assert not list(results.rglob("run.json")) if results.exists() else True


def test_zero_column_features_are_a_data_error(tmp_path, run_cli):
    folder = tmp_path / "d"
    m = write_user_dataset(folder, mutate=lambda a: [a.__setitem__(f"{s}_text", a[f"{s}_text"][:, :0]) for s in ("train", "test")],
                           checksums=False)
    m.write_text(m.read_text().replace("text_dim = 4\n", ""))
    _run_user_error(run_cli, tmp_path, m, expected="zero columns")


def test_train_test_dimension_mismatch_is_a_data_error(tmp_path, run_cli):
    m = write_user_dataset(tmp_path / "d", mutate=lambda a: a.__setitem__("test_image", a["test_image"][:, :5]), checksums=False)
    m.write_text(m.read_text().replace("image_dim = 6\n", ""))
    _run_user_error(run_cli, tmp_path, m, expected="differ in feature dims")


@pytest.mark.parametrize("setting, expected", [
    ("cca.dims=-1", "expected an integer in [0,"),
    ("random.dims=1000000000000", "expected an integer in [1,"),
    ("cca.reg=1e308", "expected a finite number in [0,"),
    ("cca.reg=-1", "expected a finite number in [0,"),
    ("ccaa.reg=5", "did you mean cca"),
    ("CCA.reg=5", "did you mean cca"),
    ("sdcmr.lr=0.1", "not one of --methods"),
    ("=5", "key=value"),
    (".reg=5", "key=value"),
])
def test_absurd_or_misdirected_set_values_are_user_errors_before_the_grid(tmp_path, run_cli, setting, expected):
    results = tmp_path / "results"
    code, out, err = run_cli("run", "--methods", "cca,random", "--dataset", "synthetic", "--results-dir", results,
                             "--no-progress", "--set", setting)
    assert_one_line(code, err, expected)
    assert not results.exists()


@pytest.mark.parametrize("extra, expected", [(["--seeds", "99999999999999999999"], "--seeds"),
                                             (["--bits", "10000000", "--methods", "random"], "--bits")])
def test_absurd_seeds_and_bits_are_user_errors_before_the_grid(tmp_path, run_cli, extra, expected):
    results = tmp_path / "results"
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress", *extra)
    assert_one_line(code, err, expected)
    assert not results.exists()


def test_declared_string_choices_are_checked_before_the_grid(monkeypatch):
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.registry import get_method
    from cmr_bench.runner.grid import expand

    from cmr_bench.hparams import Param

    cls = get_method("cca")
    monkeypatch.setattr(cls, "params", {**cls.params, "input_norm": Param("zscore", choices=("zscore", "none"))})
    monkeypatch.setattr(cls, "defaults", {**cls.defaults, "input_norm": "zscore"})
    ds = make_synthetic(n_train=20, n_test=10)
    assert expand(["cca"], ds, [0], overrides={"cca.input_norm": "none"})
    with pytest.raises(CmrBenchError, match="expected one of zscore, none"):
        expand(["cca"], ds, [0], overrides={"cca.input_norm": "zscor"})


# --- values against what a method declares (cmr_bench/hparams.py: one validator) -----------------

def _tuned_file(tuned_dir: Path, method: str, key: str, value: str, dataset: str = "synthetic") -> None:
    folder = tuned_dir / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{method}.toml").write_text(f'method = "{method}"\ndataset = "{dataset}"\nvalue = 0.5\ntrials = 4\n'
                                           f'tuned = ["{key}"]\n\n[config]\n{key} = {value}\n')


@pytest.mark.parametrize("method, key, value, expected", [
    ("cca", "reg", "-5", "cca.reg = -5: expected a finite number in [0,"),
    ("cca", "reg", "1e308", "cca.reg = 1e+308: expected a finite number"),
    ("cca", "reg", "true", "cca.reg = True: expected a finite number"),
    ("cca", "reg", "[1, 2]", "cca.reg = [1, 2]: expected a finite number"),
    ("cca", "dims", '"0"', "cca.dims = '0': expected an integer"),
    ("label-softmax", "epochs", "-1", "label-softmax.epochs = -1: expected an integer in [1, 10,000]"),
    ("label-softmax", "epochs", "2.5", "label-softmax.epochs = 2.5: expected an integer"),
    ("label-softmax", "epochs", "1000000000", "expected an integer in [1, 10,000]"),
])
def test_tuned_config_values_are_checked_against_the_declarations(tmp_path, run_cli, method, key, value, expected):
    tuned, results = tmp_path / "tuned", tmp_path / "results"
    _tuned_file(tuned, method, key, value)
    code, out, err = run_cli("run", "--methods", method, "--dataset", "synthetic", "--config", "tuned", "--tuned-dir", tuned,
                             "--results-dir", results, "--no-progress")
    assert_one_line(code, err, expected)
    assert "tuned config" in err
    assert not results.exists()


@pytest.mark.parametrize("methods, setting", [("label-softmax", "label-softmax.epochs=0"), ("sdcmr", "sdcmr.iterations=0"),
                                              ("sdcmr", "sdcmr.hidden=[64,0]"), ("sdcmr", "sdcmr.iterations=2.5"),
                                              ("sdcmr", "sdcmr.literal_scale=1"), ("mcsm", "mcsm.fusion_weight=1.5")])
def test_schedules_and_sizes_outside_the_declared_range_are_refused(tmp_path, run_cli, methods, setting):
    results = tmp_path / "results"
    code, out, err = run_cli("run", "--methods", methods, "--dataset", "synthetic", "--results-dir", results,
                             "--no-progress", "--set", setting)
    assert_one_line(code, err, f"--set: {setting.split('=')[0]} = ")
    assert not results.exists()


@pytest.mark.parametrize("extra, expected", [
    (["--methods", "cca", "--bits", "16"], "makes real-valued codes"),
    (["--methods", "sdeh", "--bits", "0"], "--bits: expected a code length in [1, 4096]"),
    (["--methods", "sdeh", "--bits", "99999"], "--bits: expected a code length in [1, 4096]"),
    (["--methods", "cca", "--seed", "-1"], "--seed: expected an integer in [0, 2**63 - 1]"),
    (["--methods", "cca", "--seed", str(2**64)], "--seed: expected an integer in [0, 2**63 - 1]"),
    (["--methods", "cca", "--val-fraction", "0.5", "--dataset-seed", "3"], "leaves 0 validation"),
    (["--methods", "cca", "--val-fraction", "0.99"], "0 training items"),
])
def test_tune_values_are_checked_before_anything_is_written(tmp_path, run_cli, extra, expected):
    pytest.importorskip("optuna")
    extra = list(extra)
    seed = extra.pop(extra.index("--dataset-seed") + 1) if "--dataset-seed" in extra else None
    if seed:  # 3 training items of 3 classes (seed 3): no class has two items to carve one from
        extra.remove("--dataset-seed")
    manifest = tmp_path / "tiny.toml"  # else 30 items: 99 % of each class leaves none to train on
    manifest.write_text(_synth(n_train=3, seed=seed) if seed else _synth(n_train=30))
    out_dir = tmp_path / "tuned"
    code, out, err = run_cli("tune", "--dataset", manifest, "--trials", "1", "--out", out_dir, *extra)
    assert_one_line(code, err, expected)
    assert not out_dir.exists()


def test_experiment_file_values_are_checked_against_the_declarations(tmp_path, run_cli):
    exp = tmp_path / "exp.toml"
    exp.write_text('name = "x"\ndataset = "synthetic"\n[[grids]]\nname = "g"\nmethods = ["cca"]\nseeds = [0]\n'
                   'set = { reg = -5 }\n')
    code, out, err = run_cli("reproduce", exp, "--dry-run", "--results-dir", tmp_path / "results")
    assert_one_line(code, err, "cca.reg = -5: expected a finite number in [0,")


# --- the store keyed by the data, tables never mixing data ----------------------------------


def _synthetic_named(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{seed}.toml"
    path.write_text(SYNTH.replace('name = "tiny"', f'name = "{name}"').format(
        synthetic=f"n_train = 40\nn_test = 20\nimage_dim = 6\ntext_dim = 4\nnum_classes = 3\nseed = {seed}"))
    return path


def test_same_name_other_data_is_another_run_and_tables_refuse_to_mix(tmp_path, run_cli):
    results = tmp_path / "results"
    real = _synthetic_named(tmp_path / "a", "mydata", seed=0)
    impostor = _synthetic_named(tmp_path / "b", "mydata", seed=1)  # same name, other data
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", real, "--results-dir", results, "--no-progress")
    assert code == 0, out + err
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", impostor, "--results-dir", results, "--no-progress")
    assert code == 0, out + err
    assert "0 already finished, 1 to run" in out  # not "already finished": the data differ
    runs = sorted(results.rglob("run.json"))
    assert len(runs) == 2
    prints = {json.loads(p.read_text())["spec"]["data"] for p in runs}
    assert len(prints) == 2 and "" not in prints
    code, out, err = run_cli("table", "--table", "2", "--dataset", "mydata", "--results-dir", results, "--out", tmp_path / "t")
    assert_one_line(code, err, "different data")
    code, out, err = run_cli("plot", "pr", "--dataset", "mydata", "--results-dir", results, "--out", tmp_path / "f.png")
    assert_one_line(code, err, "different data")
    assert not list(tmp_path.glob("f*.png"))
    # the same data again is recognised as finished
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", real, "--results-dir", results, "--no-progress")
    assert code == 0 and "1 already finished" in out


def test_fingerprint_follows_the_arrays_and_the_split():
    from cmr_bench.data.synthetic import make_synthetic

    a, b = make_synthetic(seed=0), make_synthetic(seed=0)
    assert a.fingerprint == b.fingerprint
    assert make_synthetic(seed=1).fingerprint != a.fingerprint
    c = make_synthetic(seed=0)
    c.splits["test"].image[0, 0] += 1e-3
    c._fingerprint = ""
    assert c.fingerprint != a.fingerprint
    d = make_synthetic(seed=0)
    d.protocols = {"real": d.protocols["hash"].__class__("real", "train", "test", "train")}
    assert d.fingerprint != a.fingerprint


def test_a_replaced_data_file_changes_the_fingerprint(tmp_path):
    from cmr_bench.data.loader import load_dataset

    manifest = write_user_dataset(tmp_path / "d", checksums=False)
    first = load_dataset(manifest).fingerprint
    assert load_dataset(manifest).fingerprint == first
    write_user_dataset(tmp_path / "d", checksums=False, seed=1)  # same name, same shapes, other values
    assert load_dataset(manifest).fingerprint != first


# --- store files written by someone else ---------------------------------------------------


@pytest.fixture
def one_run(tmp_path, run_cli):
    results = tmp_path / "results"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")[0] == 0
    return results, next(results.rglob("run.json")).parent


def _resign(folder: Path) -> None:
    """Edit metrics.json *and* fix its recorded checksum, as a careful forger would."""
    run = json.loads((folder / "run.json").read_text())
    p = folder / "metrics.json"
    run["files"]["metrics.json"] = {"sha256": sha256(p), "bytes": p.stat().st_size}
    (folder / "run.json").write_text(json.dumps(run))


STORE_EDITS = {
    "deep run.json": lambda f: (f / "run.json").write_text("[" * 100000 + "]" * 100000),
    "deep metrics.json": lambda f: ((f / "metrics.json").write_text("[" * 100000 + "]" * 100000), _resign(f)),
    "map is a string": lambda f: (_edit_metric(f, "0.9"), _resign(f)),
    "map is NaN": lambda f: (_edit_metric(f, float("nan")), _resign(f)),
    "map above 1": lambda f: (_edit_metric(f, 1.5), _resign(f)),
    "map below 0": lambda f: (_edit_metric(f, -0.1), _resign(f)),
    "files key deleted": lambda f: _drop_files(f, edit=True),
    "marker deleted": lambda f: (f / "cmr-bench-run").unlink(),
    "run.json a symlink": lambda f: _symlink_run_json(f),
}


def _edit_metric(folder: Path, value) -> None:
    m = json.loads((folder / "metrics.json").read_text())
    m["i2t"]["map@all"] = value
    (folder / "metrics.json").write_text(json.dumps(m))


def _drop_files(folder: Path, edit: bool) -> None:
    run = json.loads((folder / "run.json").read_text())
    del run["files"]
    (folder / "run.json").write_text(json.dumps(run))
    if edit:
        _edit_metric(folder, 0.999)


def _symlink_run_json(folder: Path) -> None:
    os.replace(folder / "run.json", folder.parent / "elsewhere.json")
    os.symlink(folder.parent / "elsewhere.json", folder / "run.json")


@pytest.mark.parametrize("case", list(STORE_EDITS))
def test_hostile_store_files_never_reach_a_table_and_never_crash(one_run, run_cli, tmp_path, case):
    results, folder = one_run
    STORE_EDITS[case](folder)
    code, out, err = run_cli("runs", "list", "--results-dir", results)
    assert code == 0 and "Traceback" not in err and "corrupt" in out, out + err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results,
                             "--out", tmp_path / "t", "--format", "csv")
    assert code == 0 and "skipping corrupt run" in err and "Traceback" not in err, err
    import pandas as pd

    row = pd.read_csv(tmp_path / "t" / "table2.csv").set_index("method").loc["CCA"]
    assert row.isna()["runs"] or row["runs"] == 0 or str(row["runs"]) in ("", "nan")
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")
    assert "Traceback" not in err, err
    if case == "marker deleted":  # not provably ours: reported, never overwritten
        assert_one_line(code, err, "not a cmr-bench run folder")
    else:
        assert code == 0 and "corrupt run folder" in out, out + err


@pytest.mark.parametrize("kind", ["lock is a folder", "protocol folder is a file", "symlink loop"])
def test_store_entries_of_the_wrong_kind_are_one_line(tmp_path, run_cli, kind):
    results = tmp_path / "results"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")[0] == 0
    cfg = next(results.glob("synthetic/real/cca/*"))
    if kind == "lock is a folder":
        (cfg / ".seed-1.lock").mkdir()
    elif kind == "protocol folder is a file":
        (results / "synthetic" / "hash").write_text("")
    else:
        os.symlink(cfg / ".seed-1.lock", cfg / ".seed-1.lock.x")
        os.symlink(cfg / ".seed-1.lock.x", cfg / ".seed-1.lock")
    before = snapshot(results)
    args = ["--seeds", "1"] if kind != "protocol folder is a file" else ["--protocol", "hash"]
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress", *args)
    assert_one_line(code, err, "results store")
    after = snapshot(results)
    assert {k: v[1:] for k, v in after.items()} == {k: v[1:] for k, v in before.items()}
    code, out, err = run_cli("runs", "list", "--results-dir", results)
    assert code == 0 and "Traceback" not in err


def test_disk_full_while_writing_a_run_is_one_line_and_keeps_finished_runs(tmp_path, run_cli, monkeypatch):
    import errno

    results = tmp_path / "results"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")[0] == 0
    before = snapshot(results)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1", "--results-dir", results,
                             "--no-progress")
    assert_one_line(code, err, "No space left on device")
    after = snapshot(results)  # the finished run untouched, no half-written folder (dir mtimes may move)
    assert {k: v[1:] for k, v in after.items()} == {k: v[1:] for k, v in before.items()}


# --- data files ----------------------------------------------------------------------------


def _h5_manifest(folder: Path, write) -> Path:
    import h5py

    manifest = write_user_dataset(folder, fmt="h5", checksums=False)
    with h5py.File(folder / "features.h5", "a") as fh:
        write(fh, folder)
    return manifest


def test_hdf5_external_storage_is_refused_unless_allowed(tmp_path, run_cli, monkeypatch):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(30 * 6, dtype=np.float32).tobytes())

    def external(fh, folder):
        del fh["train_image"]
        fh.create_dataset("train_image", shape=(30, 6), dtype=np.float32, external=[(str(secret), 0, 30 * 6 * 4)])

    manifest = _h5_manifest(tmp_path / "d", external)
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err, "external")
    monkeypatch.setenv("CMR_BENCH_ALLOW_HDF5_EXTERNAL", "1")
    code, out, err = run_cli("data", "info", manifest)
    assert code == 0, err


def test_hdf5_external_storage_on_a_fifo_does_not_hang(tmp_path, run_cli):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def external(fh, folder):
        del fh["train_image"]
        fh.create_dataset("train_image", shape=(30, 6), dtype=np.float32, external=[(str(fifo), 0, 30 * 6 * 4)])

    manifest = _h5_manifest(tmp_path / "d", external)
    start = time.monotonic()
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err, "external")
    assert time.monotonic() - start < 30


def test_hdf5_external_link_is_refused(tmp_path, run_cli):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["x"] = np.ones((30, 6), dtype=np.float32)

    def link(fh, folder):
        del fh["train_image"]
        fh["train_image"] = h5py.ExternalLink(str(other), "/x")

    manifest = _h5_manifest(tmp_path / "d", link)
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err, "external link")


@pytest.mark.parametrize("layout", ["chunked", "contiguous", "mat73"])
def test_hdf5_declaring_more_than_it_stores_fails_before_allocating(tmp_path, run_cli, layout):
    import h5py

    def huge(fh, folder):
        del fh["train_image"]
        if layout == "chunked":
            fh.create_dataset("train_image", shape=(50_000_000, 6), dtype=np.float64, chunks=(1000, 6), compression="gzip")
        else:  # never written: HDF5 allocates contiguous storage late, so the file stays tiny
            fh.create_dataset("train_image", shape=(6, 50_000_000) if layout == "mat73" else (50_000_000, 6), dtype=np.float64)

    if layout == "mat73":  # the v7.3 reader (512-byte MATLAB header, transposed variables)
        from conftest import write_mat73

        manifest = write_user_dataset(tmp_path / "d", fmt="mat73", checksums=False)
        with h5py.File(tmp_path / "d" / "features.mat", "a") as fh:
            huge(fh, None)
        code, out, err = run_cli("data", "info", manifest)
        assert_one_line(code, err, "declares")
        assert (tmp_path / "d" / "features.mat").stat().st_size < 1 << 20
        assert write_mat73
        return

    manifest = _h5_manifest(tmp_path / "d", huge)
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err, "declares")
    assert h5py  # and the file stays small:
    assert (tmp_path / "d" / "features.h5").stat().st_size < 1 << 20


def test_npy_header_declaring_more_than_the_file_holds(tmp_path, run_cli):
    folder = tmp_path / "d"
    manifest = write_user_dataset(folder, checksums=False)
    with np.load(folder / "features.npz") as z:
        arrays = dict(z)
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    header = np.lib.format.header_data_from_array_1_0(arrays["train_image"])
    with open(folder / "train_image.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": (50_000_000, 6)})
        fh.write(arrays["train_image"].tobytes())
    text = manifest.read_text().replace('path = "features.npz"', "\n".join(f'path = "{k}.npy"\n[[files]]' for k in arrays)[:-10])
    for k in arrays:
        text = text.replace(f'{{ file = "features.npz", key = "{k}" }}', f'{{ file = "{k}.npy" }}')
    manifest.write_text(text)
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err, "train_image.npy")


# --- HTTP: malformed responses, slow servers, sizes without a checksum -----------------------


class RawServer:
    """Answers each connection with `script(conn)`; stops by itself after `limit` connections
    or `lifetime` seconds (daemon thread: never outlives the test process)."""

    def __init__(self, script, limit: int = 8, lifetime: float = 60.0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.script, self.limit, self.end = script, limit, time.monotonic() + lifetime
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        served = 0
        while served < self.limit and time.monotonic() < self.end:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            served += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()
        self.sock.close()

    def _one(self, conn):
        try:
            conn.recv(65536)
            self.script(conn)
        except OSError:
            pass
        finally:
            conn.close()


BODY = b"0123456789" * 10


def _reply(head: bytes, body: bytes = BODY):
    return lambda conn: conn.sendall(head + body)


def _slow(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(30):  # 1 byte/s, bounded
        conn.sendall(b"x")
        time.sleep(1)


def _slow_headers(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(30):
        conn.sendall(b"X-A: b\r\n")
        time.sleep(1)


HTTP_CASES = {
    "bad content-length": _reply(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"),
    "negative content-length": _reply(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
    "bad status line": _reply(b"HTTP/1.1 abc OK\r\n\r\n"),
    "not http": _reply(b"SSH-2.0-OpenSSH\r\n"),
    "broken chunking": _reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\nabc\r\n"),
    "200 KB header line": _reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"),
    "more than 100 headers": _reply(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"),
    "truncated body": _reply(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"),
    "no length, no checksum": _reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
    "404": _reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b""),
    "slow body": _slow,
    "slow headers": _slow_headers,
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_malformed_or_slow_http_leaves_nothing_and_is_bounded(tmp_path, run_cli, monkeypatch, case):
    monkeypatch.setenv("CMR_BENCH_FETCH_DEADLINE", "3")
    server = RawServer(HTTP_CASES[case])
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    (tmp_path / "user" / "features.npz").unlink()
    start = time.monotonic()
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", server.url, "--no-progress")
    assert time.monotonic() - start < 20, "fetch did not respect its deadline"
    assert code == 2 and "Traceback" not in err and "NOT OK" in out, out + err
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["manifest.toml"]  # no file, no temp


def test_size_recorded_in_the_manifest_is_checked_without_a_sha256(tmp_path, run_cli):
    server = RawServer(_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"))
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    manifest.write_text(manifest.read_text().replace('sha256 = ""', 'sha256 = ""\nbytes = 99'))
    (tmp_path / "user" / "features.npz").unlink()
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", server.url, "--no-progress")
    assert code == 2 and "more than the expected 99 bytes" in out, out
    assert not (tmp_path / "user" / "features.npz").exists()


def test_unverifiable_download_that_does_not_load_is_not_kept(tmp_path, run_cli):
    server = RawServer(_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"))  # right length, wrong content
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    (tmp_path / "user" / "features.npz").unlink()
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", server.url, "--no-progress")
    assert code == 2 and "removed again" in out, out
    assert not (tmp_path / "user" / "features.npz").exists()
    assert run_cli("data", "list")[0] == 0


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://x/y", "http://", "http://[::1", "http://a:99999999/",
                                 "http://a b/", "", "javascript:alert(1)"])
def test_malformed_base_url_and_mirror_are_one_line(tmp_path, run_cli, monkeypatch, url):
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    (tmp_path / "user" / "features.npz").unlink()
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", url, "--no-progress")
    assert_one_line(code, err, "--base-url")
    monkeypatch.setenv("CMR_BENCH_MIRROR", url or " ")
    code, out, err = run_cli("data", "fetch", manifest, "--no-progress")
    assert (code == 2 and "Traceback" not in err) and ("CMR_BENCH_MIRROR" in err or "no public download" in out), out + err


# --- Ray: deadlines and intended messages --------------------------------------------------


def _silent_server(lifetime: float = 30.0) -> str:
    return RawServer(lambda conn: time.sleep(lifetime), limit=4, lifetime=lifetime).url.replace("http://", "")


@pytest.mark.ray
@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "silent", "not an address:x"])
def test_unreachable_ray_address_is_one_line_within_seconds(tmp_path, run_cli, monkeypatch, address):
    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    monkeypatch.setenv("CMR_BENCH_RAY_CONNECT_TIMEOUT", "5")
    if address == "silent":
        address = _silent_server()
    start = time.monotonic()
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", tmp_path / "r",
                             "--no-progress", "--executor", "ray", "--ray-address", address)
    assert_one_line(code, err)
    assert time.monotonic() - start < 45
    assert not list((tmp_path / "r").rglob("run.json")) if (tmp_path / "r").exists() else True


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("extra, expected", [(["--ray-cpus", "64"], "the cluster has only"),
                                             (["--ray-gpus", "1"], "--ray-gpus 1: the cluster has")])
def test_ray_resources_beyond_the_local_instance_are_the_intended_line(tmp_path, extra, expected):
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    proc = subprocess.run([sys.executable, "-m", "cmr_bench.cli", "run", "--methods", "cca", "--dataset", "synthetic",
                           "--results-dir", str(tmp_path / "r"), "--no-progress", "--executor", "ray", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Token authentication" not in proc.stderr, proc.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_under_ray_is_one_line_exit_143(tmp_path):
    import signal
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    proc = subprocess.Popen([sys.executable, "-m", "cmr_bench.cli", "run", "--methods", "sdcmr", "--dataset", "synthetic",
                             "--seeds", "0,1", "--results-dir", str(tmp_path / "r"), "--no-progress", "--executor", "ray",
                             "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while time.monotonic() < end and not list((tmp_path / "r").rglob("sdcmr")):  # the grid has started
            time.sleep(1)
        time.sleep(10)  # Ray is up and a task is running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (proc.returncode, err)
    assert err.strip().splitlines() == ["cmr-bench: terminated (SIGTERM); finished runs are kept"], err


@pytest.mark.ray
@pytest.mark.slow
def test_a_sigkilled_ray_driver_leaves_no_ray_processes(tmp_path):
    import signal
    import subprocess
    import sys

    from cmr_bench.runner.ray_watchdog import descendants

    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    proc = subprocess.Popen([sys.executable, "-m", "cmr_bench.cli", "run", "--methods", "sdcmr", "--dataset", "synthetic",
                             "--seeds", "0,1", "--results-dir", str(tmp_path / "r"), "--no-progress", "--executor", "ray",
                             "--jobs", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 240
        seen: dict[int, int] = {}
        while time.monotonic() < end:
            seen.update(descendants(proc.pid))
            if any(b"RuntimeEnvAgent" in Path(f"/proc/{p}/cmdline").read_bytes() for p in list(seen) if Path(f"/proc/{p}").exists()):
                break
            time.sleep(1)
        time.sleep(3)
        seen.update(descendants(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    from cmr_bench.runner.ray_watchdog import _alive

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(seen):
        time.sleep(1)
    survivors = [Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in _alive(seen)]
    assert seen and not survivors, survivors


# --- permissions (simulated: the suite may run as root, for whom chmod 000 changes nothing) ---


def test_unreadable_data_file_is_one_line(tmp_path, run_cli, monkeypatch):
    import cmr_bench.data.loader as loader

    manifest = write_user_dataset(tmp_path / "d")

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(loader, "sha256_file", denied)
    for cmd in (["data", "info", manifest], ["data", "verify", manifest],
                ["run", "--methods", "cca", "--dataset", manifest, "--results-dir", tmp_path / "r", "--no-progress"]):
        code, out, err = run_cli(*cmd)
        assert_one_line(code, err, "Permission denied")


def test_unreadable_run_files_are_corrupt_not_a_crash(one_run, run_cli, monkeypatch, tmp_path):
    import cmr_bench.runner.store as store

    results, folder = one_run

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store, "_load_json", denied)
    code, out, err = run_cli("runs", "list", "--results-dir", results)
    assert code == 0 and "corrupt" in out and "Traceback" not in err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results, "--out", tmp_path / "t")
    assert code == 0 and "skipping corrupt run" in err


# --- issue 30 (ugly): experiment files, option values, manifests -----------------------------

EXPERIMENT = 'name = "x"\ndataset = "synthetic"\n[[grids]]\n{grid}\n'


@pytest.mark.parametrize("grid, expected", [
    ('methods = ["cca", "cca"]', "more than once"),
    ('methods = ["cca", " CCA"]', "more than once"),
    ('methods = ["*"]', "matches every registered method"),
    ('methods = ["cca"]\nseeds = 9223372036854775808', "below 2**63"),
    ('methods = ["cca"]\nseeds = "9223372036854775808"', "below 2**63"),
    ('methods = ["cca"]\nseeds = "0,9223372036854775808"', "below 2**63"),
])
def test_experiment_file_methods_and_seeds_are_checked(tmp_path, run_cli, grid, expected):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.format(grid=grid))
    code, out, err = run_cli("reproduce", path, "--dry-run", "--results-dir", tmp_path / "r")
    assert_one_line(code, err, expected)
    assert not (tmp_path / "r").exists()


def test_experiment_file_globs_narrower_than_everything_still_work(tmp_path, run_cli):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.format(grid='methods = ["cc*"]\nseeds = "0-1"'))
    code, out, err = run_cli("reproduce", path, "--dry-run", "--results-dir", tmp_path / "r")
    assert code == 0, err


@pytest.mark.parametrize("command", ["run", "reproduce"])
def test_absurd_thread_counts_are_one_line(tmp_path, run_cli, command):
    target = ["--methods", "cca", "--dataset", "synthetic"] if command == "run" else [Path(__file__).parents[1] / "experiments" / "hashing.toml", "--dry-run"]
    code, out, err = run_cli(command, *target, "--threads", "100000", "--results-dir", tmp_path / "r")
    assert_one_line(code, err, "--threads: at most 1024")
    assert not (tmp_path / "r").exists()


BAD_LABELS = {
    "description a number": lambda: _synth().replace('name = "tiny"', 'name = "tiny"\ndescription = 5'),
    "citation a table": lambda: _synth().replace('name = "tiny"', 'name = "tiny"\ncitation = { a = 1 }'),
    "protocol description a list": lambda: _synth() + "description = [1]\n",
    "synthetic num_classes disagrees": lambda: _synth(num_classes=7),
    "synthetic multilabel for single labels": lambda: _synth(multilabel="true"),
    "synthetic one training item": lambda: _synth(n_train=1),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_manifests_whose_text_or_labels_disagree_are_refused(tmp_path, run_cli, case):
    path = tmp_path / "tiny.toml"
    path.write_text(BAD_LABELS[case]())
    code, out, err = run_cli("data", "info", path)
    assert_one_line(code, err, "malformed manifest")
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", path, "--results-dir", tmp_path / "r", "--no-progress")
    assert_one_line(code, err, "malformed manifest")
    assert not (tmp_path / "r").exists()


def test_a_fixed_split_training_on_one_item_is_refused(tmp_path, run_cli):
    m = write_user_dataset(tmp_path / "d", n_train=1, checksums=False)
    m.write_text(m.read_text().replace("train = 30", "train = 1"))
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", m, "--results-dir", tmp_path / "r", "--no-progress")
    assert_one_line(code, err, "trains on 1 item")


@pytest.mark.parametrize("command", [["data", "list"], ["list", "datasets"], ["list", "datasets", "--json"]])
def test_listing_datasets_names_the_bad_manifest_and_lists_the_others(tmp_path, run_cli, command):
    root = tmp_path / "root"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "manifest.toml").write_text(BAD_LABELS["description a number"]().replace('"tiny"', '"bad"'))
    (root / "good.toml").write_text(_synth().replace('"tiny"', '"good"'))
    code, out, err = run_cli("--data-root", root, *command)
    assert code == 0 and "Traceback" not in err, err
    assert "good" in out and "synthetic" in out and "wiki" in out
    assert "bad" in out and "malformed" in out and "'description' must be a string" in out


# --- issue 30 (ugly): a tampered run is refused by `eval --run` and never reaches a table ----

def _rewrite_run(folder: Path, edit, redigest: bool) -> None:
    """Edit run.json; `redigest`: also recompute its digest, as a careful forger would."""
    from cmr_bench.runner.store import DIGEST_KEY, run_digest

    run = json.loads((folder / "run.json").read_text())
    assert DIGEST_KEY in run  # written by this version
    edit(run)
    if redigest:
        run[DIGEST_KEY] = run_digest(run)
    (folder / "run.json").write_text(json.dumps(run))


def _move_to_method(folder: Path, method: str) -> Path:
    """The run folder copied under another method's folder (same tag and seed)."""
    import shutil

    target = folder.parents[2] / method / folder.parent.name / folder.name
    target.parent.mkdir(parents=True)
    shutil.copytree(folder, target)
    shutil.rmtree(folder.parents[1])
    return target


TAMPERED = {
    "codes checksum entry removed": lambda f: (_rewrite_run(f, lambda r: r["files"].pop("arrays.npz"), redigest=False), f)[1],
    "codes checksum entry removed, digest redone": lambda f: (_rewrite_run(f, lambda r: r["files"].pop("arrays.npz"), redigest=True), f)[1],
    "one value edited": lambda f: (_rewrite_run(f, lambda r: r["spec"]["config"].update(reg=0.5), redigest=False), f)[1],
    "timestamp edited": lambda f: (_rewrite_run(f, lambda r: r.update(finished="2020-01-01T00:00:00"), redigest=False), f)[1],
    "method edited, digest redone": lambda f: (_rewrite_run(f, lambda r: r["spec"].update(method="kcca"), redigest=True), f)[1],
    "folder moved to another method": lambda f: _move_to_method(f, "kcca"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_run_is_refused_by_eval_and_left_out_of_tables(one_run, run_cli, tmp_path, case):
    results, folder = one_run
    folder = TAMPERED[case](folder)
    code, out, err = run_cli("eval", "--run", folder)
    assert_one_line(code, err, "corrupt")
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results,
                             "--out", tmp_path / "t", "--format", "csv")
    assert code == 0 and "skipping corrupt run" in err, err
    import pandas as pd

    table = pd.read_csv(tmp_path / "t" / "table2.csv").set_index("plugin")  # the method column holds display names
    for method in ("cca", "kcca"):
        assert table.loc[method, "runs"] in (0, "0") or pd.isna(table.loc[method, "runs"]), table.loc[method]


def test_a_run_written_before_the_digest_is_accepted_when_its_files_and_folder_agree(one_run, run_cli, tmp_path):
    """Legacy runs (no digest in run.json) stay valid on the other checks: every file listed
    with a matching sha256, nothing unlisted, dataset/protocol/method matching the folder."""
    from cmr_bench.runner.store import DIGEST_KEY

    results, folder = one_run
    run = json.loads((folder / "run.json").read_text())
    del run[DIGEST_KEY]
    (folder / "run.json").write_text(json.dumps(run))
    code, out, err = run_cli("eval", "--run", folder)
    assert code == 0 and "Traceback" not in err, err
    run["spec"]["method"] = "kcca"  # ... and refused when the method is not its folder's
    (folder / "run.json").write_text(json.dumps(run))
    code, out, err = run_cli("eval", "--run", folder)
    assert_one_line(code, err, "its folder for 'cca'")


# --- issue 30 (ugly): tune under Ctrl-C, concurrent invocations, foreign study storages ------

DRIVER = Path(__file__).parent / "tune_driver.py"


def _tune_process(tmp_path, *extra):
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TUNE_STARTED": str(tmp_path / "started"), "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, str(DRIVER), "tune", "--methods", "test-slow-tune", "--dataset", "synthetic",
                             "--trials", "4", "--out", str(tmp_path / "tuned"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell ignores SIGINT


@pytest.mark.parametrize("jobs, how", [("1", "SIGINT"), ("2", "SIGINT"),
                                       pytest.param("1", "SIGKILL", marks=pytest.mark.slow)])  # fast: ..._is_released
def test_ctrl_c_during_tune_is_one_line_and_the_study_resumes(tmp_path, run_cli, monkeypatch, slow_grid_method, jobs, how):
    """Ctrl-C: one line, the trial it stopped is rerun by the same command. SIGKILL: nothing
    can be said, but the trial left running does not hold a slot of the budget for ever."""
    import signal

    optuna = pytest.importorskip("optuna")
    proc = _tune_process(tmp_path, "--jobs", jobs)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "started").exists(), proc.communicate()
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=120)
    if how == "SIGINT":
        assert proc.returncode == 130, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "interrupted while tuning test-slow-tune" in err and "resumes" in err
    assert not (tmp_path / "tuned" / "synthetic" / "test-slow-tune.toml").exists()
    monkeypatch.setenv("TUNE_STARTED", str(tmp_path / "started"))
    monkeypatch.setenv("TUNE_STEPS", "2")
    code, out, err = run_cli("tune", "--methods", "test-slow-tune", "--dataset", "synthetic", "--trials", "4",
                             "--out", tmp_path / "tuned", "--jobs", jobs)  # the same command finishes the study
    assert code == 0, err
    tuned = (tmp_path / "tuned" / "synthetic" / "test-slow-tune.toml").read_text()
    assert "trials = 4\n" in tuned and f"jobs = [{jobs}]\n" in tuned
    study = optuna.load_study(study_name="synthetic/test-slow-tune", storage=f"sqlite:///{tmp_path / 'tuned' / 'synthetic' / 'studies.db'}")
    scored = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(scored) == 4 and len(set(scored)) == 4


@pytest.fixture
def slow_grid_method():
    from test_tuning import _registered
    from tune_driver import SlowGrid

    yield from _registered(SlowGrid)


def test_a_trial_left_running_by_a_killed_process_is_released(tmp_path, monkeypatch, slow_grid_method):
    """A SIGKILLed `tune` leaves its trial "running"; it held a slot of the budget for ever
    (3 trials scored of 4). The next `tune` on this host fails it and reruns its values first."""
    import socket
    import subprocess
    import sys

    optuna = pytest.importorskip("optuna")
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    monkeypatch.setenv("TUNE_STARTED", str(tmp_path / "started"))
    monkeypatch.setenv("TUNE_STEPS", "1")
    ds = load_dataset("synthetic")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    tune_method("test-slow-tune", ds, 2, storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.load_study(study_name="synthetic/test-slow-tune", storage=storage)
    grid = [0.1, 0.3, 0.5, 0.7, 0.9, 1.1]
    # the orphan is what a killed `tune` leaves: a trial of tune's own grid sampler (seed 0),
    # holding the next grid point (load_study's default TPE could draw a point already scored)
    study.sampler = optuna.samplers.GridSampler({"x": grid}, seed=0)
    orphan = study.ask()
    orphan.suggest_categorical("x", grid)
    study._storage.set_trial_user_attr(orphan._trial_id, "owner", {"host": socket.gethostname(), "pid": dead.pid})
    res = tune_method("test-slow-tune", ds, 4, storage)
    study = optuna.load_study(study_name="synthetic/test-slow-tune", storage=storage)
    scored = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert res["trials"] == 4 and len(scored) == 4 and len(set(scored)) == 4
    assert orphan.params["x"] in scored  # its values were run again


@pytest.mark.parametrize("jobs, fresh", [(1, False), (2, True)])
def test_two_tune_invocations_on_one_study_keep_the_budget_and_never_repeat_a_point(tmp_path, monkeypatch, slow_grid_method,
                                                                                   jobs, fresh):
    """Two `tune` of one study at once (here two threads, each with its own study object on one
    SQLite file, as two processes would have): 8 trials finished for a budget of 4, and grid
    points repeated, before trials were claimed in the storage. `fresh`: both also create the
    file's tables at once (one of them failed with an IntegrityError)."""
    optuna = pytest.importorskip("optuna")
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.tuning import tune_method

    monkeypatch.setenv("TUNE_STARTED", str(tmp_path / "started"))
    monkeypatch.setenv("TUNE_STEPS", "6")
    ds = load_dataset("synthetic")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    if not fresh:
        optuna.storages.RDBStorage(storage)  # the tables exist: only the budget is contended
    results, errors = [], []
    gate = threading.Barrier(2)

    def tune():
        gate.wait()
        try:
            results.append(tune_method("test-slow-tune", ds, 4, storage, jobs=jobs))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    workers = [threading.Thread(target=tune) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert not errors, errors
    study = optuna.load_study(study_name="synthetic/test-slow-tune", storage=storage)
    scored = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(scored) == 4 and len(set(scored)) == 4, [(t.number, t.state, t.params, t.user_attrs) for t in study.trials]
    assert [r["trials"] for r in results] and all(r["trials"] <= 4 for r in results)


STUDY_EDITS = {
    "score NaN": "update trial_values set value = 'nan'",
    "score a string": "update trial_values set value = 'abc'",
    "score 5": "update trial_values set value = 5",
    "distribution garbage": "update trial_params set distribution_json = 'garbage'",
    "distribution of another space": "update trial_params set distribution_json = "
                                     "'{\"name\": \"FloatDistribution\", \"attributes\": {\"low\": 0, \"high\": 1, \"log\": false, \"step\": null}}'",
    "parameter a string": "update trial_params set param_value = 'x'",
    "parameter out of its choices": "update trial_params set param_value = 99",
    "state garbage": "update trials set state = 'XYZ'",
}


@pytest.fixture(scope="module")
def tuned_study(tmp_path_factory):
    """A finished 2-trial CCA study (tuned file and studies.db), made once."""
    pytest.importorskip("optuna")
    from cmr_bench.cli import main

    out = tmp_path_factory.mktemp("study") / "tuned"
    assert main(["tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("case", list(STUDY_EDITS))
def test_a_corrupt_or_foreign_study_file_is_one_line(tmp_path, run_cli, tuned_study, case):
    import shutil
    import sqlite3

    out = tmp_path / "tuned"
    shutil.copytree(tuned_study, out)
    before = (out / "synthetic" / "cca.toml").read_bytes()
    with sqlite3.connect(out / "synthetic" / "studies.db") as con:
        con.execute(STUDY_EDITS[case])
    code, stdout, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "3", "--out", out)
    assert_one_line(code, err, "use another --storage or delete it")
    assert (out / "synthetic" / "cca.toml").read_bytes() == before  # the last good result is kept


@pytest.mark.parametrize("query", ["?mode=ro", "?foo=bar", "?x", "?timeout=5&cache=shared"])
def test_a_storage_query_sqlite_would_ignore_is_refused(tmp_path, run_cli, query):
    pytest.importorskip("optuna")
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "1", "--out", tmp_path / "t",
                             "--storage", f"sqlite:///{tmp_path / 's.db'}{query}")
    assert_one_line(code, err, "--storage: SQLite ignores")
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "t").exists()


def test_a_storage_query_sqlite_honours_is_honoured(tmp_path, run_cli):
    pytest.importorskip("optuna")
    code, out, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "1", "--out", tmp_path / "t",
                             "--storage", f"sqlite:///{tmp_path / 's.db'}?timeout=5")
    assert code == 0 and "Traceback" not in err and "Warning" not in err, err
    assert (tmp_path / "s.db").is_file()


# --- issue 30 (ugly): data import and fetch leave nothing behind ------------------------------

def _import_setup(tmp_path):
    src = tmp_path / "mine"
    manifest = write_user_dataset(src, checksums=False)
    root = tmp_path / "root"
    root.mkdir()
    (root / "mydata.toml").write_text('folder = "mydata"\n' + manifest.read_text())
    return src, root


@pytest.mark.parametrize("link", [False, True])
def test_import_refuses_a_link_out_of_the_source_folder(tmp_path, run_cli, link):
    src, root = _import_setup(tmp_path)
    outside = tmp_path / "elsewhere" / "secret.npz"
    outside.parent.mkdir()
    os.replace(src / "features.npz", outside)
    os.symlink(outside, src / "features.npz")
    code, out, err = run_cli("--data-root", root, "data", "import", "mydata", src, *(["--link"] if link else []))
    assert code == 2 and "Traceback" not in err and "outside" in out and "not imported" in out, out + err
    assert not os.path.lexists(root / "mydata" / "features.npz")


def test_import_does_not_keep_an_unverifiable_file_that_does_not_load(tmp_path, run_cli):
    src, root = _import_setup(tmp_path)
    (src / "features.npz").write_bytes(b"not an npz")
    code, out, err = run_cli("--data-root", root, "data", "import", "mydata", src)
    assert code == 2 and "Traceback" not in err and "removed again" in out, out + err
    assert not os.path.lexists(root / "mydata" / "features.npz")


def _fetch_process(manifest: Path, url: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "cmr_bench.cli", "data", "fetch", str(manifest), "--base-url", url, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_fetch_leaves_no_part_file(tmp_path, run_cli, monkeypatch, how):
    """SIGTERM: the fetch removes its temporary file on the way out; SIGKILL cannot be caught,
    so the next fetch or import removes a temporary file whose process is gone."""
    import signal

    server = RawServer(_slow, lifetime=40)
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    (tmp_path / "user" / "features.npz").unlink()
    proc = _fetch_process(manifest, server.url)
    deadline = time.monotonic() + 60
    parts = []
    while not parts and proc.poll() is None and time.monotonic() < deadline:
        parts = [p for p in (tmp_path / "user").iterdir() if ".part-" in p.name]
        time.sleep(0.05)
    assert parts, proc.communicate()
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    if how == "SIGTERM":
        assert proc.returncode == 143 and len(err.strip().splitlines()) == 1, err
        assert not [p for p in (tmp_path / "user").iterdir() if ".part-" in p.name]
        return
    assert [p for p in (tmp_path / "user").iterdir() if ".part-" in p.name]  # what SIGKILL leaves ...
    monkeypatch.setenv("CMR_BENCH_FETCH_DEADLINE", "1")
    run_cli("data", "fetch", manifest, "--base-url", RawServer(_reply(b"HTTP/1.1 404 Not Found\r\n\r\n", b"")).url, "--no-progress")
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["manifest.toml"]  # ... the next fetch removes


def test_fetch_has_an_overall_deadline(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("CMR_BENCH_FETCH_DEADLINE", "100")
    monkeypatch.setenv("CMR_BENCH_FETCH_TOTAL_DEADLINE", "2")
    server = RawServer(_slow, lifetime=40)
    manifest = write_user_dataset(tmp_path / "user", checksums=False)
    text = manifest.read_text()
    manifest.write_text(text + '\n[[files]]\npath = "extra.npz"\nsha256 = ""\n')
    (tmp_path / "user" / "features.npz").unlink()
    start = time.monotonic()
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", server.url, "--no-progress")
    assert time.monotonic() - start < 30, "the overall deadline was not applied"
    assert code == 2 and "Traceback" not in err and "the whole fetch may take 2 s" in out, out + err
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["manifest.toml"]


# --- issue 30: grids counted before they are expanded ----------------------------------------

HUGE_EXPERIMENT = '''
name = "huge"
dataset = "synthetic"

[[grids]]
name = "everything"
methods = "all"
seeds = "0-99999"
'''


@pytest.mark.parametrize("command", ["run", "reproduce"])
def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path, run_cli, monkeypatch, command):
    from cmr_bench.runner import grid

    def never(*args, **kwargs):  # the old code built millions of RunSpecs before saying anything
        raise AssertionError("RunSpec built for a grid over the limit")

    monkeypatch.setattr(grid, "RunSpec", never)
    if command == "run":
        args = ["run", "--methods", "all", "--dataset", "synthetic", "--seeds", "0-99999"]
    else:
        (tmp_path / "huge.toml").write_text(HUGE_EXPERIMENT)
        args = ["reproduce", tmp_path / "huge.toml"]
    code, out, err = run_cli(*args, "--dry-run", "--results-dir", tmp_path / "runs")
    assert_one_line(code, err, "--max-runs")
    assert not (tmp_path / "runs").exists()


def test_max_runs_sets_the_limit_both_ways(tmp_path, run_cli):
    base = ["run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0-2", "--dry-run", "--results-dir", tmp_path]
    assert_one_line(*run_cli(*base, "--max-runs", "2")[::2], "3 runs")
    code, out, err = run_cli(*base, "--max-runs", "3")
    assert code == 0 and "3 runs" in out, err


# --- issue 30: plugins that misbehave ----------------------------------------------------------

class _EntryPoint:
    """Stands in for an installed package's entry point."""

    def __init__(self, name, load):
        self.name, self.value, self._load = name, f"broken_pkg:{name}", load

    def load(self):
        return self._load()


def _raises():
    raise ImportError("No module named 'missing_dependency'")


def _exits():
    import sys

    sys.exit(3)


@pytest.fixture
def broken_plugins(monkeypatch):
    from cmr_bench import registry

    registry._load()
    saved = (dict(registry._REGISTRY), dict(registry._SOURCES), dict(registry._BROKEN))
    registry._loaded = False
    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint("raiser", _raises), _EntryPoint("exiter", _exits)])
    yield
    for store, old in zip((registry._REGISTRY, registry._SOURCES, registry._BROKEN), saved):
        store.clear()
        store.update(old)
    registry._loaded = True


@pytest.mark.parametrize("command", [["list", "methods"], ["run", "--methods", "cca", "--dataset", "synthetic", "--no-progress"],
                                     ["table", "--table", "2", "--dataset", "synthetic"]])
def test_a_plugin_failing_at_import_does_not_break_the_others(tmp_path, run_cli, broken_plugins, command):
    code, out, err = run_cli(*command, "--results-dir", tmp_path) if command[0] != "list" else run_cli(*command)
    assert code == 0, err
    assert "Traceback" not in err
    assert "'raiser'" in err and "missing_dependency" in err and "'exiter'" in err and "SystemExit" in err
    if command[0] == "list":
        assert "cca" in out


def test_naming_a_broken_plugin_is_one_line_with_its_error(tmp_path, run_cli, broken_plugins):
    code, out, err = run_cli("run", "--methods", "raiser", "--dataset", "synthetic", "--results-dir", tmp_path)
    assert code == 2 and err.strip().splitlines()[-1].startswith("cmr-bench: error:") and "missing_dependency" in err


@pytest.fixture
def misbehaving_method():
    from cmr_bench.plugin import Method, MethodInfo

    class Misbehaving(Method):
        name = "test-misbehaving"
        info = MethodInfo("Misbehaving", "test", "test", 2026, status="baseline")
        defaults = {"mode": "exit"}

        def fit(self, train, val=None):
            import sys

            mode = self.config["mode"]
            if mode == "exit":
                sys.exit(0)
            if mode == "forever":
                while True:
                    time.sleep(0.05)
            if mode == "swallow":  # even a plugin catching everything cannot hide the time limit
                while True:
                    try:
                        time.sleep(0.05)
                    except Exception:
                        pass
            if mode == "log":
                return [{"step": 0, "loss": object()}]
            return []

        def encode(self, features, modality):
            mode = self.config["mode"]
            out = features[:, :3].astype(np.float64)
            if mode == "complex":
                return out + 1j
            if mode == "object":
                return out.astype(object)
            return out

    with registered(Misbehaving):
        yield Misbehaving


@pytest.mark.parametrize("mode, extra, reason", [
    ("exit", [], "sys.exit(0)"),
    ("complex", [], "real numbers"),
    ("object", [], "real numbers"),
    ("log", [], "not a JSON value"),
    ("forever", ["--run-timeout", "1"], "time limit"),
    ("swallow", ["--run-timeout", "1"], "time limit"),
])
def test_a_misbehaving_fit_is_a_failed_run_with_its_reason(tmp_path, run_cli, misbehaving_method, mode, extra, reason):
    code, out, err = run_cli("run", "--methods", "test-misbehaving,cca", "--dataset", "synthetic", "--set", f"mode={mode}",
                             "--results-dir", tmp_path, "--no-progress", *extra)
    assert code == 1, (out, err)  # a failed run, never exit 0 with nothing stored
    runs = {json.loads(p.read_text())["spec"]["method"]: json.loads(p.read_text()) for p in tmp_path.rglob("run.json")}
    assert runs["cca"]["status"] == "done"  # the grid went on
    assert runs["test-misbehaving"]["status"] == "failed" and reason in runs["test-misbehaving"]["reason"]


def test_run_timeout_is_a_positive_number(tmp_path, run_cli):
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--run-timeout", "-1", "--results-dir", tmp_path)
    assert_one_line(code, err, "--run-timeout")


@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/null", "/nonexistent/plugin.py"])
def test_check_plugin_of_a_file_that_is_not_a_plugin_is_one_line(run_cli, path):
    assert_one_line(*run_cli("check-plugin", path)[::2], "check-plugin")


def test_check_plugin_of_a_file_that_exits_at_import_is_one_line(tmp_path, run_cli):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
    assert_one_line(*run_cli("check-plugin", tmp_path / "quits.py")[::2], "does not import")


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_tune_of_a_failing_plugin_is_one_line_per_trial(tmp_path, run_cli, caplog, mode):
    optuna = pytest.importorskip("optuna")
    from cmr_bench.plugin import Method, MethodInfo

    class Failing(Method):
        name = "test-failing-tune"
        info = MethodInfo("Failing", "test", "test", 2026, status="baseline")
        defaults = {"dims": 2}
        search_space = {"dims": ("choice", [2, 3])}

        def fit(self, train, val=None):
            if mode == "raise":
                raise RuntimeError("fit exploded")
            return []

        def encode(self, features, modality):
            return np.full((len(features), self.config["dims"]), np.nan)

    optuna.logging.enable_propagation()  # Optuna's records reach caplog instead of its own handler
    optuna.logging.disable_default_handler()  # (whose stream may be an earlier test's closed capture)
    try:
        with registered(Failing):
            code, out, err = run_cli("tune", "--methods", "test-failing-tune", "--dataset", "synthetic", "--trials", "2",
                                     "--out", tmp_path)
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.enable_default_handler()
    assert_one_line(code, err, "no trial finished")
    failed = [r for r in caplog.records if r.name.startswith("optuna") and "failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info is None for r in failed)  # one line per failed trial, no traceback


# --- issue 30: strings from runs, manifests and plugins are escaped in every format ------------

def test_a_set_value_with_markup_is_text_in_markdown_and_latex():
    import pandas as pd

    from cmr_bench.report.tables import Table, to_latex, to_markdown

    evil = "<script>alert(1)</script>&#x3C;|$\\input{/etc/passwd}"

    t = Table(name="table2", title=f"Table II: {evil}", dataset="synthetic",
              frame=pd.DataFrame({"Method": [f"CCA {{x={evil}}}"], "Img2Txt": ["0.500"]}),
              display=pd.DataFrame({"Method": [f"CCA {{x={evil}}}"], "Img2Txt": ["0.500"]}), notes=[f"note {evil}"])
    md = to_markdown(t)
    assert "<script" not in md and "</script" not in md and "&#x3C;" not in md
    assert md.count("\n|") == 3  # header, rule, one row: the `|` in the value did not split the row
    tex = to_latex(t)
    assert "\\input{" not in tex.replace("\\textbackslash{}input\\{", "")


@pytest.mark.slow  # two spawned workers: ~40 s on a loaded 2-core machine
def test_run_timeout_holds_in_worker_processes_too(tmp_path, run_cli):
    # --jobs 2: each worker's main thread keeps the time; 1 ms is less than any real fit
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1", "--jobs", "2",
                             "--run-timeout", "0.001", "--results-dir", tmp_path, "--no-progress")
    assert code == 1, (out, err)
    runs = [json.loads(p.read_text()) for p in tmp_path.rglob("run.json")]
    assert len(runs) == 2 and all(r["status"] == "failed" and "time limit" in r["reason"] for r in runs)


@pytest.fixture
def tagged_method():
    from cmr_bench.plugin import Method, MethodInfo

    class Tagged(Method):
        name = "test-tagged"
        info = MethodInfo("Tagged <b>method</b>", "test", "test", 2026, status="baseline")
        defaults = {"tag": "plain"}

        def fit(self, train, val=None):
            return []

        def encode(self, features, modality):
            return features[:, :3].astype(np.float32)

    with registered(Tagged):
        yield Tagged


def test_table_include_overrides_puts_no_raw_markup_in_markdown_or_latex(tmp_path, run_cli, tagged_method):
    evil = "<script>alert(1)</script>\\input{x}"
    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "test-tagged", "--dataset", "synthetic", "--set", f"test-tagged.tag={evil}",
                             "--results-dir", results, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results,
                             "--include-overrides", "--out", tmp_path / "out")
    assert code == 0, err
    md = (tmp_path / "out" / "table2.md").read_text()
    assert "alert(1)" in md  # the row is there ...
    assert "<script" not in md and "<b>" not in md  # ... as text, not markup
    assert "\\input{x}" not in (tmp_path / "out" / "table2.tex").read_text()  # LaTeX's markup: escaped too


def test_check_plugin_of_a_fit_that_calls_sys_exit_reports_failed_checks(tmp_path, run_cli):
    (tmp_path / "exits_in_fit.py").write_text(
        "import sys\nimport numpy as np\nfrom cmr_bench.plugin import Method, MethodInfo\n\n\n"
        "class ExitsInFit(Method):\n    name = 'test-exits-in-fit'\n"
        "    info = MethodInfo('Exits', 'test', 'test', 2026, status='baseline')\n    defaults = {}\n\n"
        "    def fit(self, train, val=None):\n        sys.exit(0)\n\n"
        "    def encode(self, features, modality):\n        return np.zeros((len(features), 2), np.float32)\n")
    code, out, err = run_cli("check-plugin", tmp_path / "exits_in_fit.py")
    assert code == 1 and "FAIL" in out and "SystemExit" in out, (out, err)  # never a silent exit 0
