"""Data layer: manifests, readers, loader, splits, and the `cmr-bench data` commands."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from cmr_bench.data.loader import load_dataset
from cmr_bench.data.manifest import all_manifests, builtin_manifest_paths
from cmr_bench.data.splits import carve_validation, sample_query_database
from cmr_bench.errors import DataError, UnknownNameError
from conftest import sha256, write_mat73, write_user_dataset

# ---- built-in manifests -------------------------------------------------------------------


def test_every_builtin_manifest_parses():
    manifests = all_manifests()
    assert {"wiki", "pascal", "mirflickr25k", "nuswide-tc10", "nuswide-10k", "xmedianet", "synthetic"} <= set(manifests)
    for m in manifests.values():
        assert m.protocols and m.num_classes >= 1
        assert m.raw.get("citation") and m.raw.get("terms"), f"{m.name}: citation and terms are required"


def test_synthetic_dataset_is_seeded_and_typed():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert np.array_equal(a.splits["train"].image, b.splits["train"].image)
    s = a.splits["train"]
    assert s.image.dtype == np.float32 and s.labels.dtype == np.int64 and s.labels.ndim == 1
    assert set(a.protocols) == {"real", "hash"}


# ---- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npz", "mat", "mat73", "h5"])
def test_user_manifest_loads_every_format(tmp_path, fmt):
    manifest = write_user_dataset(tmp_path / "ds", fmt=fmt)
    ds = load_dataset(manifest)
    assert ds.name == "mydata"
    assert ds.splits["train"].image.shape == (30, 6) and ds.splits["test"].text.shape == (12, 4)
    assert ds.splits["train"].labels.dtype == np.int64 and ds.splits["train"].labels.shape == (30,)
    ref = np.load(tmp_path / "ds" / "features.npz") if fmt == "npz" else None
    if ref is not None:
        np.testing.assert_array_equal(ds.splits["test"].image, ref["test_image"])


def test_mat73_is_read_in_matlab_orientation(tmp_path):
    from cmr_bench.data.manifest import ArraySpec
    from cmr_bench.data.readers import read_array

    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    write_mat73(tmp_path / "a.mat", {"X": x})
    np.testing.assert_array_equal(read_array(tmp_path, ArraySpec(file="a.mat", key="X")), x)


def test_list_labels_and_offset(tmp_path):
    from cmr_bench.data.manifest import ArraySpec
    from cmr_bench.data.readers import read_array

    (tmp_path / "a.list").write_text("t1\ti1\t3\nt2\ti2\t1\n")
    assert read_array(tmp_path, ArraySpec(file="a.list", column=2)).tolist() == [3, 1]


def test_user_dataset_dropped_into_data_root(tmp_path):
    write_user_dataset(tmp_path / "mydata")
    ds = load_dataset("mydata", root=tmp_path)
    assert len(ds.splits["train"]) == 30


# ---- errors: one DataError line each -------------------------------------------------------


def _bad(tmp_path, **kw):
    manifest = write_user_dataset(tmp_path / "bad", **kw)
    with pytest.raises(DataError) as info:
        load_dataset(manifest)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_error_nan_features(tmp_path):
    assert "NaN or Inf" in _bad(tmp_path, mutate=lambda a: a["train_image"].__setitem__((3, 1), np.nan))


def test_error_inf_features(tmp_path):
    assert "NaN or Inf" in _bad(tmp_path, mutate=lambda a: a["test_text"].__setitem__((0, 0), np.inf))


def test_error_count_mismatch(tmp_path):
    def drop(a):
        a["train_labels"] = a["train_labels"][:-2]

    assert "count mismatch" in _bad(tmp_path, mutate=drop)


def test_error_wrong_dimension(tmp_path):
    def widen(a):
        a["train_image"] = np.zeros((30, 7), np.float32)

    assert "expected 6 dims, got 7" in _bad(tmp_path, mutate=widen)


def test_error_wrong_shape(tmp_path):
    def flat(a):
        a["train_text"] = np.zeros(30, np.float32)

    assert "2-D" in _bad(tmp_path, mutate=flat)


def test_error_labels_out_of_range(tmp_path):
    assert "out of range" in _bad(tmp_path, mutate=lambda a: a["test_labels"].__setitem__(0, 9))


def test_error_checksum_mismatch(tmp_path):
    manifest = write_user_dataset(tmp_path / "bad")
    text = manifest.read_text()
    digest = sha256(tmp_path / "bad" / "features.npz")
    manifest.write_text(text.replace(digest, "0" * 64))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(manifest)


def test_error_missing_file_names_file_and_place(tmp_path):
    manifest = write_user_dataset(tmp_path / "bad")
    (tmp_path / "bad" / "features.npz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(manifest)
    msg = str(info.value)
    assert "features.npz" in msg and str(tmp_path / "bad") in msg and "cmr-bench data import" in msg


def test_error_missing_data_root(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("wiki", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert "raw_features.mat" in msg and "nowhere" in msg and "cmr-bench data fetch wiki" in msg


def test_error_corrupt_mat_file(tmp_path):
    manifest = write_user_dataset(tmp_path / "bad", fmt="mat", checksums=False)
    (tmp_path / "bad" / "features.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + b"\x00" * 50)
    with pytest.raises(DataError, match="unreadable|no array"):
        load_dataset(manifest)


def test_error_missing_array_key(tmp_path):
    manifest = write_user_dataset(tmp_path / "bad")
    manifest.write_text(manifest.read_text().replace('key = "train_text"', 'key = "nope"'))
    with pytest.raises(DataError, match="no array 'nope'"):
        load_dataset(manifest)


def test_error_unknown_dataset_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean wiki"):
        load_dataset("wikii")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.replace('label_kind = "single"', 'label_kind = "many"'), "label_kind"),
        (lambda t: t.replace("num_classes = 3", 'num_classes = "three"'), "'num_classes' must be int"),
        (lambda t: t.replace("[protocols.real]", "[protocolz.real]"), "missing key 'protocols'"),
        (lambda t: t.replace('kind = "fixed"', 'kind = "magic"'), "split.kind"),
        (lambda t: t.replace("[arrays.test]", "[arrays.tset]"), "missing key 'test'"),
        (lambda t: t + "\n[[[broken", "malformed manifest"),
    ],
)
def test_error_malformed_manifest(tmp_path, edit, expected):
    manifest = write_user_dataset(tmp_path / "bad")
    manifest.write_text(edit(manifest.read_text()))
    with pytest.raises(DataError, match="malformed manifest") as info:
        load_dataset(manifest)
    assert expected in str(info.value)


# ---- splits ----------------------------------------------------------------------------------


def test_sample_query_database_is_seeded_disjoint_and_complete():
    a = sample_query_database(100, 10, 30, seed=3)
    b = sample_query_database(100, 10, 30, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not set(a["query"]) & set(a["database"])
    assert len(a["query"]) + len(a["database"]) == 100
    assert set(a["train"]) <= set(a["database"]) and len(set(a["train"])) == 30
    assert not np.array_equal(a["query"], sample_query_database(100, 10, 30, seed=4)["query"])


def test_validation_split_is_stratified_disjoint_and_seeded():
    ds = load_dataset("synthetic")
    train = ds.splits["train"]
    rest, val = carve_validation(train, 0.1, seed=0)
    assert len(rest) + len(val) == len(train)
    assert not set(rest.indices) & set(val.indices)
    assert set(np.unique(val.labels)) == set(np.unique(train.labels))
    assert np.array_equal(val.indices, carve_validation(train, 0.1, seed=0)[1].indices)


def test_sampled_layout_end_to_end(tmp_path):
    """The DCMH *-iall/-yall/-lall layout, multi-label, with the split drawn once and saved."""
    import scipy.io

    rng = np.random.default_rng(0)
    n, c = 60, 5
    labels = (rng.random((n, c)) < 0.3).astype(np.uint8)
    labels[np.arange(n), rng.integers(0, c, n)] = 1
    folder = tmp_path / "root" / "flickr"
    folder.mkdir(parents=True)
    write_mat73(folder / "f-iall.mat", {"IAll": rng.normal(size=(n, 8))})
    scipy.io.savemat(folder / "f-yall.mat", {"YAll": (rng.random((n, 6)) < 0.5).astype(np.uint8)})
    scipy.io.savemat(folder / "f-lall.mat", {"LAll": labels})
    (folder / "manifest.toml").write_text(
        """name = "flickr"
label_kind = "multi"
num_classes = 5
image_dim = 8
text_dim = 6
[[files]]
path = "f-iall.mat"
[[files]]
path = "f-yall.mat"
[[files]]
path = "f-lall.mat"
[arrays.all]
image = { file = "f-iall.mat", key = "IAll" }
text = { file = "f-yall.mat", key = "YAll" }
labels = { file = "f-lall.mat", key = "LAll" }
[split]
kind = "sampled"
seed = 7
query = 10
train = 20
sizes = { query = 10, database = 50, train = 20 }
[protocols.hash]
train = "train"
query = "query"
retrieval = "database"
"""
    )
    ds = load_dataset("flickr", root=tmp_path / "root")
    assert ds.label_kind == "multi" and ds.splits["query"].labels.shape == (10, 5)
    saved = list((tmp_path / "root" / "flickr" / "splits").glob("*.npz"))
    assert len(saved) == 1
    again = load_dataset("flickr", root=tmp_path / "root")
    assert np.array_equal(again.splits["train"].indices, ds.splits["train"].indices)
    np.testing.assert_array_equal(ds.splits["query"].labels, labels[ds.splits["query"].indices])


# ---- real files --------------------------------------------------------------------------------


def test_real_wiki_loads_with_published_counts(real_root):
    ds = load_dataset("wiki", root=real_root)
    train, test = ds.splits["train"], ds.splits["test"]
    assert (len(train), len(test), ds.image_dim, ds.text_dim, ds.num_classes) == (2173, 693, 128, 10, 10)
    assert np.bincount(train.labels).tolist() == [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
    assert np.bincount(test.labels).tolist() == [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]
    np.testing.assert_allclose(train.image.sum(1), 1.0, atol=1e-4)  # SIFT histograms


def test_real_partial_datasets_reported_with_missing_files(real_root, run_cli):
    code, out, err = run_cli("--data-root", real_root, "data", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert rows["wiki"]["state"] == "complete"
    assert rows["pascal"]["state"] == "partial" and rows["pascal"]["missing"] == ["train_img.mat"]
    assert rows["mirflickr25k"]["state"] == "partial" and rows["mirflickr25k"]["missing"] == ["mirflickr25k-iall.mat"]


def test_real_pascal_and_mirflickr_files_read(real_root):
    """The present files of the partial sets read in their layouts (loader-level)."""
    from cmr_bench.data.manifest import find_manifest
    from cmr_bench.data.readers import read_array

    pascal = find_manifest("pascal")
    assert read_array(real_root / "pascal", pascal.arrays["test"]["image"]).shape == (100, 4096)
    assert read_array(real_root / "pascal", pascal.arrays["train"]["labels"]).shape == (800, 1)
    flickr = find_manifest("mirflickr25k")
    labels = read_array(real_root / "mirflickr25k", flickr.arrays["all"]["labels"])
    assert labels.shape == (20015, 24) and labels.sum(1).min() >= 1


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_info_json_wiki(real_root, run_cli):
    code, out, _ = run_cli("--data-root", real_root, "data", "info", "wiki", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["splits"]["train"]["size"] == 2173 and info["splits"]["test"]["size"] == 693
    assert (info["image_dim"], info["text_dim"], info["num_classes"], info["label_kind"]) == (128, 10, 10, "single")


def test_cli_verify_wiki_ok_and_partial_fails(real_root, run_cli):
    assert run_cli("--data-root", real_root, "data", "verify", "wiki")[0] == 0
    code, out, _ = run_cli("--data-root", real_root, "data", "verify", "pascal")
    assert code == 2 and "train_img.mat: MISSING" in out


def test_cli_list_datasets_json(run_cli, tmp_path):
    code, out, _ = run_cli("--data-root", tmp_path, "list", "datasets", "--json")
    assert code == 0 and {r["name"] for r in json.loads(out)} >= set(builtin_manifest_paths())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["data", "info", "wikii"], "did you mean wiki"),
        (["data", "verify", "nosuch"], "unknown dataset"),
        (["data", "info", "/no/such/manifest.toml"], "manifest not found"),
    ],
)
def test_cli_errors_are_one_line_exit_2(run_cli, tmp_path, args, expected):
    code, out, err = run_cli("--data-root", tmp_path, *args)
    assert code == 2 and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_error_bad_user_data_via_subprocess(tmp_path):
    """The installed console script: one line, exit 2, no traceback."""
    import subprocess
    import sys

    manifest = write_user_dataset(tmp_path / "bad", mutate=lambda a: a["train_image"].__setitem__((0, 0), np.nan))
    proc = subprocess.run([sys.executable, "-m", "cmr_bench.cli", "data", "info", str(manifest)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "NaN" in proc.stderr and "Traceback" not in proc.stderr


# ---- fetch and import against a real HTTP server on 127.0.0.1 -------------------------------------


@pytest.fixture
def http_server():
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_wiki_from_local_mirror(real_root, tmp_path, http_server, run_cli, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(real_root / "wiki", mirror / "wiki")
    monkeypatch.setenv("CMR_BENCH_MIRROR", http_server(mirror))
    root = tmp_path / "root"
    code, out, err = run_cli("--data-root", root, "data", "fetch", "wiki", "--no-progress")
    assert code == 0, out + err
    assert sha256(root / "wiki" / "raw_features.mat") == sha256(real_root / "wiki" / "raw_features.mat")
    assert run_cli("--data-root", root, "data", "verify", "wiki")[0] == 0
    assert not list((root / "wiki").glob(".*part*"))


def test_fetch_checksum_mismatch_leaves_no_file(tmp_path, http_server, run_cli):
    served = tmp_path / "served"
    manifest = write_user_dataset(served)
    good = sha256(served / "features.npz")
    (served / "features.npz").write_bytes(b"not the file")  # the server now serves a corrupt copy
    user = tmp_path / "user"
    user.mkdir()
    (user / "manifest.toml").write_text(manifest.read_text())
    assert good in (user / "manifest.toml").read_text()
    code, out, _ = run_cli("data", "fetch", user / "manifest.toml", "--base-url", http_server(served), "--no-progress")
    assert code == 2 and "checksum mismatch" in out
    assert not (user / "features.npz").exists() and not list(user.glob(".*part*"))


def test_fetch_then_load_user_dataset(tmp_path, http_server, run_cli):
    served = tmp_path / "served"
    manifest = write_user_dataset(served)
    user = tmp_path / "user"
    user.mkdir()
    (user / "manifest.toml").write_text(manifest.read_text())
    code, out, _ = run_cli("data", "fetch", user / "manifest.toml", "--base-url", http_server(served), "--no-progress")
    assert code == 0, out
    assert "downloaded" in out and "loads: train 30, test 12" in out


def test_fetch_server_down_is_one_line(tmp_path, run_cli):
    manifest = write_user_dataset(tmp_path / "user")
    (tmp_path / "user" / "features.npz").unlink()
    code, out, _ = run_cli("data", "fetch", manifest, "--base-url", "http://127.0.0.1:9", "--no-progress")
    assert code == 2 and "download of" in out and "failed" in out


def test_import_copies_and_verifies(tmp_path, run_cli):
    src = tmp_path / "mine"
    write_user_dataset(src)
    root = tmp_path / "root"
    # a user manifest dropped into the data root as <root>/<name>.toml reads files from <root>/<name>/ once imported
    root.mkdir()
    text = (src / "manifest.toml").read_text()
    (root / "mydata.toml").write_text('folder = "mydata"\n' + text)
    code, out, err = run_cli("--data-root", root, "data", "import", "mydata", src)
    assert code == 0, out + err
    assert (root / "mydata" / "features.npz").is_file()
    assert load_dataset("mydata", root=root).splits["test"].image.shape == (12, 6)


def test_import_refuses_corrupt_file(tmp_path, run_cli):
    src = tmp_path / "mine"
    manifest = write_user_dataset(src)
    root = tmp_path / "root"
    root.mkdir()
    (root / "mydata.toml").write_text('folder = "mydata"\n' + manifest.read_text())
    (src / "features.npz").write_bytes(b"corrupt")
    code, out, _ = run_cli("--data-root", root, "data", "import", "mydata", src)
    assert code == 2 and "checksum mismatch" in out and not (root / "mydata" / "features.npz").exists()
