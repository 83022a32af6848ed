"""Bad input, tried deliberately: malformed files, manifests and CLI values at every entry
point each give one clear line on stderr and exit code 2, never a traceback (let alone a
crash), and never touch an existing result (the results store is snapshotted before and
after). Random byte corruption of data files is explored with hypothesis."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmr_bench.data.loader import load_dataset
from cmr_bench.errors import CmrBenchError
from conftest import write_user_dataset

# --- the store every bad invocation must leave alone ---------------------------------------


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(root))] = (st_.st_mtime_ns, st_.st_size if p.is_file() else 0, digest)
    return out


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory) -> Path:
    from cmr_bench.cli import main

    results = tmp_path_factory.mktemp("seeded") / "runs"
    assert main(["run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0", "--results-dir", str(results), "--no-progress"]) == 0
    return results


class Store:
    def __init__(self, path: Path):
        self.path = path
        self.before = snapshot(path)

    def untouched(self) -> bool:
        return snapshot(self.path) == self.before


@pytest.fixture
def store(seeded_store, tmp_path) -> Store:
    path = tmp_path / "runs"
    shutil.copytree(seeded_store, path)
    assert len([p for p in path.rglob("run.json")]) == 1
    return Store(path)


def assert_one_line(code, err: str, expected: str | None = None) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("cmr-bench: error:"), err
    if expected:
        assert expected in err, err


# --- CLI values ------------------------------------------------------------------------------

RUN = ["run", "--methods", "cca", "--dataset", "synthetic"]


@pytest.mark.parametrize("extra, expected", [
    (["--bits", "0"], "--bits"),
    (["--bits", "16,abc"], "--bits"),
    (["--bits", ""], "--bits: no values"),
    (["--seeds", "x"], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "5-2"], "empty range"),
    (["--seeds", "0-99999999999"], "more than"),
    (["--seeds", ",,"], "no values"),
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "-2"], "--jobs"),
    (["--jobs", "x"], "--jobs"),
    (["--jobs", "1.5"], "--jobs"),
    (["--executor", "dask"], "--executor"),
    (["--ray-address", "10.0.0.1:6379"], "only applies with --executor ray"),
    (["--ray-cpus", "2"], "only applies with --executor ray"),
    (["--device", "tpu"], "unknown device"),
    (["--set", "reg"], "key=value"),
    (["--set", "reg=abc"], "expected a finite number"),
    (["--set", "reg=NaN"], "expected a finite number"),
    (["--set", "dims=1.5"], "expected an integer"),
    (["--set", "nosuch=1"], "nosuch"),
    (["--variants", "nosuch"], "variant"),
    (["--protocol", "nosuch"], "no protocol"),
])
def test_nonsense_run_values(run_cli, store, extra, expected):
    code, out, err = run_cli(*RUN, *extra, "--results-dir", store.path)
    assert_one_line(code, err, expected)
    assert store.untouched()


@pytest.mark.parametrize("args, expected", [
    (["run", "--methods", "nosuch", "--dataset", "synthetic"], "unknown method 'nosuch'"),
    (["run", "--methods", "", "--dataset", "synthetic"], "no methods"),
    (["run", "--methods", "cca", "--dataset", "nosuch"], "unknown dataset"),
    (["run", "--methods", "cca", "--dataset", "/nonexistent/manifest.toml"], "not found"),
    (["run", "--methods", "cca"], "required"),
    (["run", "--dataset", "synthetic"], "required"),
])
def test_unknown_methods_and_datasets(run_cli, store, args, expected):
    code, out, err = run_cli(*args, "--results-dir", store.path)
    assert_one_line(code, err, expected)
    assert store.untouched()


def test_ray_values_are_checked_before_anything_starts(run_cli, store):
    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    for extra, expected in ((["--ray-cpus", "0"], "--ray-cpus"), (["--ray-cpus", "nan"], "--ray-cpus"),
                            (["--ray-gpus", "-1"], "--ray-gpus"), (["--ray-address", " "], "empty address")):
        code, out, err = run_cli(*RUN, "--executor", "ray", *extra, "--results-dir", store.path)
        assert_one_line(code, err, expected)
    assert store.untouched()


def test_results_dir_that_is_a_file(run_cli, tmp_path):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    code, out, err = run_cli(*RUN, "--results-dir", f)
    assert_one_line(code, err, "not a folder")
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize("args, expected", [
    (["runs", "list", "--results-dir", "{missing}"], "no results store"),
    (["runs", "clean", "--results-dir", "{missing}"], "no results store"),
    (["runs", "list", "--results-dir", "{store}", "--status", "bogus"], "--status"),
    (["runs", "list", "--results-dir", "{store}", "--dataset", "nosuch"], "no runs of dataset"),
    (["runs", "clean", "--results-dir", "{store}", "--dataset", "nosuch"], "no runs of dataset"),
    (["runs", "frobnicate"], "invalid choice"),
    (["new-method", "Bad Name"], "lower-case"),
    (["new-method", "cca"], "exists already"),
    (["check-plugin", "nosuch"], "unknown method"),
    (["plot", "pr", "--dataset", "synthetic", "--results-dir", "{missing}"], "no finished runs"),
    (["table", "--table", "2", "--dataset", "synthetic", "--results-dir", "{store}", "--format", "docx", "--out", "{tmp}"], "--format"),
    (["table", "--table", "2", "--dataset", "synthetic", "--results-dir", "{store}", "--metric", "p@3", "--out", "{tmp}"], "--metric"),
])
def test_other_entry_points(run_cli, store, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)  # new-method must not write anywhere here either
    values = {"missing": str(tmp_path / "missing"), "store": str(store.path), "tmp": str(tmp_path / "out")}
    code, out, err = run_cli(*[a.format(**values) for a in args])
    assert_one_line(code, err, expected)
    assert store.untouched() and not (tmp_path / "missing").exists() and not (tmp_path / "methods").exists()


@pytest.mark.parametrize("args", [["table", "--table", "9", "--dataset", "synthetic"], ["plot", "bogus", "--dataset", "x"],
                                  ["data", "info"], ["run", "--methods", "cca", "--dataset", "synthetic", "--no-such-flag"]])
def test_argparse_errors_of_other_subcommands_are_one_line(run_cli, args):
    code, out, err = run_cli(*args)
    assert_one_line(code, err)


# --- data files and manifests ------------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _file(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.suffix in (".mat", ".h5", ".npz"))


def _edit(old: str, new: str):
    def edit(manifest: Path) -> None:
        text = manifest.read_text()
        assert old in text, old
        manifest.write_text(text.replace(old, new, 1))
    return edit


def _set_arrays(fn):
    return lambda arrays: fn(arrays)


DATA_CASES = {
    # files
    "truncated .mat v5": dict(fmt="mat", file=lambda f: _truncate(f), expected="MATLAB"),
    "empty .mat": dict(fmt="mat", file=lambda f: f.write_bytes(b""), expected="unreadable"),
    "truncated .mat v7.3": dict(fmt="mat73", file=lambda f: _truncate(f), expected="unreadable"),
    "truncated .h5": dict(fmt="h5", file=lambda f: _truncate(f), expected="unreadable"),
    "garbage .npz": dict(fmt="npz", file=lambda f: f.write_bytes(os.urandom(300)), expected="unreadable"),
    "checksum mismatch": dict(fmt="npz", checksums=True, file=lambda f: f.write_bytes(f.read_bytes() + b"x"), expected="checksum"),
    "missing file": dict(fmt="npz", file=lambda f: f.unlink(), expected="missing", info_reports=True),
    # manifests
    "manifest missing key": dict(manifest=_edit("num_classes = 3\n", ""), expected="missing key 'num_classes'"),
    "manifest wrong type": dict(manifest=_edit("num_classes = 3", 'num_classes = "three"'), expected="must be int"),
    "manifest TOML syntax": dict(manifest=_edit("[split]", "[split"), expected="malformed manifest"),
    "manifest not UTF-8": dict(manifest=lambda m: m.write_bytes(b"\xff\xfe\x00garbage"), expected="malformed manifest"),
    "manifest empty": dict(manifest=lambda m: m.write_text(""), expected="missing key"),
    "manifest class_names not a list": dict(manifest=_edit('label_kind = "single"', 'label_kind = "single"\nclass_names = 5'),
                                            expected="malformed manifest"),
    "manifest offset not an int": dict(manifest=_edit('key = "train_labels" }', 'key = "train_labels", offset = "x" }'),
                                       expected="malformed manifest"),
    "manifest files not a list": dict(manifest=_edit('[[files]]\npath = "features.npz"\nsha256 = ""', "files = 5"),
                                      expected="malformed manifest"),
    "manifest unknown split file": dict(manifest=_edit('key = "test_text" }', 'key = "nosuch" }'), expected="no array 'nosuch'"),
    # contents
    "wrong feature dimension": dict(manifest=_edit("image_dim = 6", "image_dim = 7"), expected="expected 7 dims"),
    "labels out of range": dict(mutate=lambda a: a.__setitem__("train_labels", a["train_labels"] + 10), expected="out of range"),
    "empty split": dict(mutate=lambda a: [a.__setitem__(f"test_{k}", a[f"test_{k}"][:0]) for k in ("image", "text", "labels")],
                        expected="empty split"),
    "NaN features": dict(mutate=lambda a: a["train_image"].__setitem__((3, 2), np.nan), expected="NaN"),
    "count mismatch": dict(mutate=lambda a: a.__setitem__("train_text", a["train_text"][:-2]), expected="count mismatch"),
    "3-D features": dict(mutate=lambda a: a.__setitem__("train_image", a["train_image"][:, :, None]), expected="2-D"),
    "text labels": dict(mutate=lambda a: a.__setitem__("train_labels", np.array(["cat"] * len(a["train_labels"]))),
                        expected="labels must be"),
}


def make_case(folder: Path, case: dict) -> Path:
    n_test = 12
    manifest = write_user_dataset(folder, fmt=case.get("fmt", "npz"), checksums=case.get("checksums", False),
                                  n_test=n_test, mutate=case.get("mutate"))
    if "file" in case:
        case["file"](_file(folder))
    if "manifest" in case:
        case["manifest"](manifest)
    return manifest


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_bad_data_through_run_is_one_line_and_touches_nothing(run_cli, store, tmp_path, name):
    case = DATA_CASES[name]
    manifest = make_case(tmp_path / "data", case)
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", manifest, "--results-dir", store.path, "--no-progress")
    assert_one_line(code, err, case["expected"])
    assert store.untouched()


@pytest.mark.parametrize("name", [n for n, c in DATA_CASES.items() if not c.get("info_reports")])
def test_bad_data_through_data_info_is_one_line(run_cli, tmp_path, name):
    manifest = make_case(tmp_path / "data", DATA_CASES[name])
    code, out, err = run_cli("data", "info", manifest)
    assert_one_line(code, err)


def test_unknown_dataset_everywhere(run_cli, store):
    for args in (["data", "info", "nosuch"], ["data", "verify", "nosuch"], [*RUN[:3], "--dataset", "nosuch", "--results-dir", str(store.path)]):
        code, out, err = run_cli(*args)
        assert_one_line(code, err, "unknown dataset 'nosuch'")
    assert store.untouched()


# --- random corruption (hypothesis) --------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    """One small dataset per format: (manifest, data file, original bytes)."""
    import scipy.io

    out = {}
    for fmt in ("mat", "matz", "mat73", "h5", "npz"):
        folder = tmp_path_factory.mktemp(f"fuzz-{fmt}")
        manifest = write_user_dataset(folder, fmt="mat" if fmt == "matz" else fmt, checksums=False, n_train=20, n_test=8)
        f = _file(folder)
        if fmt == "matz":  # the compressed v5 layout (miCOMPRESSED elements)
            arrays = {k: v for k, v in scipy.io.loadmat(f).items() if not k.startswith("__")}
            scipy.io.savemat(f, arrays, do_compression=True)
        out[fmt] = (manifest, f, f.read_bytes())
    return out


corruption = st.tuples(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=24),
    st.one_of(st.none(), st.floats(0, 1)),
)


def _corrupt(original: bytes, edits) -> bytes:
    flips, cut = edits
    data = bytearray(original)
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    return bytes(data)


@pytest.mark.parametrize("fmt", ["mat", "matz", "mat73", "h5", "npz"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=corruption)
def test_random_corruption_never_escapes_as_anything_but_one_error(pristine, fmt, edits):
    manifest, f, original = pristine[fmt]
    f.write_bytes(_corrupt(original, edits))
    try:
        load_dataset(manifest, checksums=False)
    except CmrBenchError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
    finally:
        f.write_bytes(original)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=corruption)
def test_random_corruption_through_the_cli_is_exit_0_or_one_line(pristine, run_cli, tmp_path_factory, edits):
    manifest, f, original = pristine["mat"]
    f.write_bytes(_corrupt(original, edits))
    try:
        code, out, err = run_cli("run", "--methods", "cca", "--dataset", manifest, "--dry-run",
                                 "--results-dir", tmp_path_factory.getbasetemp() / "fuzz-runs")
    finally:
        f.write_bytes(original)
    if code != 0:
        assert_one_line(code, err)


def test_an_error_quoting_names_from_a_corrupt_file_is_still_one_line(run_cli, tmp_path):
    """A corrupt MAT file's variable names may hold a newline (found by the fuzz test above:
    "has: train_labe\\ns"): every CmrBenchError prints as one line, control characters escaped."""
    from cmr_bench.errors import DataError

    exc = DataError("features.mat: no array 'train_labels' (has: train_labe\ns, test\x00image)")
    assert "\n" not in str(exc) and "\x00" not in str(exc)
    assert "train_labe\\ns" in str(exc) and "test\\x00image" in str(exc)
    assert str(DataError("plain é message")) == "plain é message"
