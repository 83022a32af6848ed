"""Shared fixtures. Real-data tests find the data root through $CMR_BENCH_DATA (CI sets it to
../shared/data) or ../shared/data beside the checkout, and skip with a reason when absent."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_root() -> Path | None:
    for candidate in (os.environ.get("CMR_BENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "wiki" / "raw_features.mat").is_file():
            return Path(candidate).resolve()
    return None


REAL_ROOT = _real_root()

# `--jobs` defaults to auto (worker processes); the suite runs grids in its own process unless a
# test asks for workers: tests register plugins in-process and read the runs' log lines in
# order. Set before any fixture runs (module-scoped ones too); tests of the auto default unset it.
os.environ["CMR_BENCH_JOBS"] = "1"


def pytest_collection_modifyitems(config, items):
    # Tests marked `cuda` run only where a CUDA device is visible (GPU machines); CI is CPU-only.
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device visible")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture
def real_root() -> Path:
    if REAL_ROOT is None:
        pytest.skip("real benchmark files not found: set CMR_BENCH_DATA to a data root holding wiki/")
    return REAL_ROOT


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    # Checksum and split caches go to a per-session temp dir, never the user's home.
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.fixture
def run_cli(capsys):
    """Run `cmr-bench ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from cmr_bench.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_user_dataset(folder: Path, n_train=30, n_test=12, image_dim=6, text_dim=4, num_classes=3, fmt="npz",
                       checksums=True, seed=0, mutate=None) -> Path:
    """A small user dataset (files + manifest.toml) in `folder`; returns the manifest path.
    `mutate(arrays)` may corrupt the arrays before they are written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"{split}_image"] = rng.normal(size=(n, image_dim)).astype(np.float32)
        arrays[f"{split}_text"] = rng.normal(size=(n, text_dim)).astype(np.float32)
        arrays[f"{split}_labels"] = rng.integers(0, num_classes, size=n)
    if mutate:
        mutate(arrays)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        fname = "features.npz"
        np.savez(folder / fname, **arrays)
    elif fmt == "mat":
        import scipy.io

        fname = "features.mat"
        scipy.io.savemat(folder / fname, arrays)
    elif fmt == "mat73":
        fname = "features.mat"
        write_mat73(folder / fname, arrays)
    elif fmt == "h5":
        import h5py

        fname = "features.h5"
        with h5py.File(folder / fname, "w") as fh:
            for k, v in arrays.items():
                fh[k] = v
    else:
        raise ValueError(fmt)
    digest = sha256(folder / fname) if checksums else ""
    arrays_toml = "\n".join(
        f'[arrays.{s}]\nimage = {{ file = "{fname}", key = "{s}_image" }}\ntext = {{ file = "{fname}", key = "{s}_text" }}\n'
        f'labels = {{ file = "{fname}", key = "{s}_labels" }}\n'
        for s in ("train", "test")
    )
    manifest = folder / "manifest.toml"
    manifest.write_text(
        f'''name = "mydata"
label_kind = "single"
num_classes = {num_classes}
image_dim = {image_dim}
text_dim = {text_dim}

[[files]]
path = "{fname}"
sha256 = "{digest}"

{arrays_toml}
[split]
kind = "fixed"
sizes = {{ train = {n_train}, test = {n_test} }}

[protocols.real]
train = "train"
query = "test"
retrieval = "test"
'''
    )
    return manifest


def write_mat73(path: Path, arrays: dict) -> None:
    """A MATLAB v7.3 file: HDF5 with a 512-byte header, variables stored column-major."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as fh:
        for k, v in arrays.items():
            fh[k] = np.ascontiguousarray(np.asarray(v).T)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by cmr-bench tests".ljust(116, b" "))


EXAMPLE_PLUGIN_SRC = REPO / "tests" / "example_plugin"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """tests/example_plugin installed into a temporary --target folder, shared by the session
    (nothing is installed into the environment itself)."""
    import shutil
    import subprocess
    import sys

    site = tmp_path_factory.getbasetemp() / "example-plugin-site"
    if not (site / "cmr_example_plugin").is_dir():
        src = tmp_path_factory.mktemp("example-plugin-src") / "pkg"
        shutil.copytree(EXAMPLE_PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                               "--target", str(site), str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return site


@pytest.fixture
def one_torch_thread():
    """Method tests train on one thread: deterministic timing on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
