"""The MIRFlickr-25K and NUS-WIDE (DCMH/DJSRH) layouts end to end on synthetic files written
in their exact layout: the built-in manifests with smaller sizes, MATLAB v5 files for
MIRFlickr and v7.3 (HDF5, column-major) files for NUS-WIDE, through `cmr-bench run` with the
three hashing methods and the hashing table."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.io

from cmr_bench.data.manifest import builtin_manifest_paths
from cmr_bench.registry import all_methods
from conftest import write_mat73

N, N_QUERY, N_TRAIN = 260, 40, 120


def _layout(root, name, image_dim, text_dim, num_classes, v73):
    """Copy the built-in manifest with smaller sizes and write its three files in place."""
    text = builtin_manifest_paths()[name].read_text()
    text = re.sub(r"^image_dim = \d+", f"image_dim = {image_dim}", text, flags=re.M)
    text = re.sub(r"^text_dim = \d+", f"text_dim = {text_dim}", text, flags=re.M)
    text = re.sub(r"^query = \d+", f"query = {N_QUERY}", text, flags=re.M)
    text = re.sub(r"^train = \d+", f"train = {N_TRAIN}", text, flags=re.M)
    text = re.sub(r"^sizes = .*$", f"sizes = {{ query = {N_QUERY}, database = {N - N_QUERY}, train = {N_TRAIN} }}", text, flags=re.M)
    text = re.sub(r'sha256 = "[0-9a-f]+"', 'sha256 = ""', text)  # our synthetic files are not the real ones
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(text)
    rng = np.random.default_rng(0)
    labels = (rng.random((N, num_classes)) < 0.2).astype(np.uint8)
    labels[np.arange(N), rng.integers(0, num_classes, N)] = 1
    centers = rng.normal(size=(num_classes, image_dim))
    image = labels @ centers + rng.normal(size=(N, image_dim))
    tags = ((labels @ rng.normal(size=(num_classes, text_dim)) + rng.normal(size=(N, text_dim))) > 1).astype(np.uint8)
    files = {f.split('"')[1]: None for f in re.findall(r'path = "[^"]+"', text)}
    i_file, y_file, l_file = list(files)
    if v73:
        write_mat73(folder / i_file, {"IAll": image})
        write_mat73(folder / y_file, {"YAll": tags})
        write_mat73(folder / l_file, {"LAll": labels})
    else:
        scipy.io.savemat(folder / i_file, {"IAll": image})
        scipy.io.savemat(folder / y_file, {"YAll": tags})
        scipy.io.savemat(folder / l_file, {"LAll": labels})
    return folder / "manifest.toml", labels


def _smoke_overrides(methods):
    out = []
    for m in methods:
        for key, value in all_methods()[m].smoke_config.items():
            out += ["--set", f"{m}.{key}={json.dumps(value)}"]
    return out


@pytest.mark.parametrize("name, v73, num_classes, text_dim", [("mirflickr25k", False, 24, 30), ("nuswide-tc10", True, 10, 25)])
def test_hashing_layout_end_to_end(run_cli, tmp_path, name, v73, num_classes, text_dim):
    manifest, labels = _layout(tmp_path / "data", name, 20, text_dim, num_classes, v73)
    code, out, err = run_cli("data", "info", manifest, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert {k: v["size"] for k, v in info["splits"].items()} == {"query": N_QUERY, "database": N - N_QUERY, "train": N_TRAIN}
    methods = ["ssah", "djsrh", "sdeh"]
    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", ",".join(methods), "--dataset", manifest, "--bits", "16",
                             "--results-dir", results, "--no-progress", *_smoke_overrides(methods))
    assert code == 0, out + err
    runs = [json.loads(p.read_text()) for p in results.rglob("run.json")]
    assert len(runs) == 3 and all(r["status"] == "done" for r in runs)
    for folder in {p.parent for p in results.rglob("metrics.json")}:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["similarity"] == "hamming" and (metrics["n_query"], metrics["n_retrieval"]) == (N_QUERY, N - N_QUERY)
        arrays = np.load(folder / "arrays.npz")
        assert arrays["codes_query_image"].shape == (N_QUERY, 16)
        # the stored split indices are rows of the original files, and the labels match them
        assert not set(arrays["split_query_indices"]) & set(arrays["split_retrieval_indices"])
        assert set(arrays["split_train_indices"]) <= set(arrays["split_retrieval_indices"])
        assert len(metrics["i2t"]["pr_curve"]["radius"]) == 17
    # the hashing table reads runs made with overrides only when they are the published config;
    # here every run has --set overrides, so the table lists the methods as not run
    code, out, err = run_cli("table", "--table", "hash", "--dataset", "mirflickr25k" if not v73 else "nuswide-tc10",
                             "--results-dir", results, "--out", tmp_path / "t", "--format", "md")
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "Method" not in line}
    assert {"SSAH", "DJSRH", "SDEH"} <= set(rows)  # display names
    assert all("±" not in rows[m] for m in ("SSAH", "DJSRH", "SDEH"))  # no number from an overridden run
