"""Load a dataset from its manifest: find the files, verify checksums, read the arrays,
check shapes, dtypes, labels and finiteness, and return one typed Dataset."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_bench.data.manifest import Manifest, find_manifest
from cmr_bench.data.readers import read_array
from cmr_bench.data.root import data_root
from cmr_bench.data.splits import sample_query_database
from cmr_bench.data.synthetic import make_synthetic
from cmr_bench.data.types import Dataset, Split
from cmr_bench.errors import DataError


def files_dir(manifest: Manifest, root: Path) -> Path:
    """Built-in manifests read <root>/<name>/; a user's manifest reads `folder` (relative to
    the manifest) when it sets one, else the manifest's own folder."""
    if manifest.path.resolve().parent == _builtin_folder().resolve():
        return root / manifest.name
    if "folder" in manifest.raw:
        return (manifest.path.parent / manifest.raw["folder"]).resolve()
    return manifest.path.parent


def _builtin_folder() -> Path:
    from importlib import resources

    return Path(str(resources.files("cmr_bench.datasets")))


def how_to_get(manifest: Manifest) -> str:
    fetchable = bool(manifest.source.get("base_url"))
    if fetchable and all(f.fetch for f in manifest.files):
        return f"get it with `cmr-bench data fetch {manifest.name}`"
    where = f" (see {manifest.homepage})" if manifest.homepage else ""
    return f"bring the files{where} and run `cmr-bench data import {manifest.name} FOLDER`"


@dataclass
class FileStatus:
    path: str
    present: bool
    size: int | None


def file_status(manifest: Manifest, folder: Path) -> list[FileStatus]:
    out = []
    for f in manifest.files:
        p = folder / f.path
        out.append(FileStatus(f.path, p.is_file(), p.stat().st_size if p.is_file() else None))
    return out


def dataset_state(manifest: Manifest, root: Path) -> str:
    """'generated' (synthetic), 'complete', 'partial' or 'missing'."""
    if manifest.split_kind == "synthetic":
        return "generated"
    status = file_status(manifest, files_dir(manifest, root))
    present = sum(s.present for s in status)
    return "complete" if present == len(status) else ("missing" if present == 0 else "partial")


# --- checksums, cached by (path, size, mtime) so big files are hashed once ------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cache_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("cmr-bench")) / "checksums.json"


def cached_sha256(path: Path) -> str:
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _cache_path()
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.safe_io import read_text, write_text

    try:
        cache = json.loads(read_text(cache_file, "checksum cache", 256 * 2**20)) if os.path.lexists(cache_file) else {}
        cache = cache if isinstance(cache, dict) else {}
    except (CmrBenchError, ValueError, RecursionError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = sha256_file(path)
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_file, json.dumps(cache), "checksum cache")
    except (OSError, CmrBenchError):
        pass  # a read-only (or planted) cache only costs time
    return digest


def checked_sha256(path: Path, dataset: str) -> str:
    """cached_sha256 with an unreadable file as one DataError line."""
    try:
        return cached_sha256(path)
    except OSError as exc:
        raise DataError(f"dataset '{dataset}': cannot read {path}: {exc.strerror or exc}") from None


def check_files(manifest: Manifest, folder: Path, checksums: bool = True, groups: list[str] | None = None) -> None:
    """Every file of the manifest, or with `groups` only the files those array groups name."""
    files = manifest.files
    if groups is not None:
        used = {spec.file for g in groups for spec in manifest.arrays[g].values()}
        files = [f for f in files if f.path in used]
    missing = [f.path for f in files if not (folder / f.path).is_file()]
    if missing:
        raise DataError(
            f"dataset '{manifest.name}': missing {', '.join(missing)} in {folder}; {how_to_get(manifest)}"
        )
    if checksums:
        for f in files:
            if f.sha256 and checked_sha256(folder / f.path, manifest.name) != f.sha256:
                raise DataError(
                    f"dataset '{manifest.name}': checksum mismatch for {folder / f.path} "
                    f"(expected sha256 {f.sha256[:12]}...); the file is corrupt or a different version"
                )


# --- arrays -> validated splits ------------------------------------------------------------


def _features(array: np.ndarray, what: str, expected_dim: int | None) -> np.ndarray:
    if array.ndim != 2:
        raise DataError(f"{what}: expected a 2-D (items x dims) array, got shape {array.shape}")
    if array.shape[1] == 0:
        raise DataError(f"{what}: the features have zero columns")
    if expected_dim and array.shape[1] != expected_dim:
        raise DataError(f"{what}: expected {expected_dim} dims, got {array.shape[1]}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{what}: expected real numbers, got dtype {array.dtype}")
    with np.errstate(all="ignore"):  # values beyond float32 become Inf, reported below (no warning first)
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DataError(f"{what}: {bad} rows contain NaN or Inf")
    return array


def _labels(array: np.ndarray, what: str, manifest: Manifest, offset: int) -> np.ndarray:
    c = manifest.num_classes
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{what}: labels must be real numbers, got dtype {array.dtype}")
    if manifest.label_kind == "single":
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise DataError(f"{what}: single-label data needs one class per row, got shape {array.shape}")
        with np.errstate(all="ignore"):
            if not (np.isfinite(array).all() and np.all(np.mod(array, 1) == 0)):
                raise DataError(f"{what}: class labels must be integers")
            if array.size and (array.min() < -2**62 or array.max() > 2**62):
                raise DataError(f"{what}: labels out of range 0..{c - 1}")
            labels = array.astype(np.int64) + offset
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise DataError(f"{what}: labels out of range 0..{c - 1} (found {labels.min()}..{labels.max()})")
        return labels
    if array.ndim != 2 or array.shape[1] != c:
        raise DataError(f"{what}: multi-label data needs an (items x {c}) multi-hot matrix, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise DataError(f"{what}: multi-hot labels must be 0 or 1")
    return array.astype(np.int64)


def _read_group(manifest: Manifest, folder: Path, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    specs = manifest.arrays[group]
    where = f"dataset '{manifest.name}' {group}"
    image = _features(read_array(folder, specs["image"]), f"{where} image features", manifest.image_dim)
    text = _features(read_array(folder, specs["text"]), f"{where} text features", manifest.text_dim)
    labels = _labels(read_array(folder, specs["labels"]), f"{where} labels", manifest, specs["labels"].offset)
    if not (len(image) == len(text) == len(labels)):
        raise DataError(f"{where}: count mismatch: {len(image)} images, {len(text)} texts, {len(labels)} labels")
    if len(image) == 0:
        raise DataError(f"{where}: empty split")
    return image, text, labels


def _sampled_indices(manifest: Manifest, n: int, root: Path) -> dict[str, np.ndarray]:
    """Draw once from the recorded seed, save next to the data (or in the user cache when the
    data root is read-only), and reuse the saved file from then on."""
    s = manifest.split
    name = f"{manifest.name}-seed{s['seed']}-q{s['query']}-t{s['train']}-n{n}.npz"
    candidates = [root / manifest.name / "splits" / name]
    import platformdirs

    candidates.append(Path(platformdirs.user_cache_dir("cmr-bench")) / "splits" / name)
    for path in candidates:
        if path.is_file():
            saved = _read_saved_split(path, n, s["query"], s["train"])
            if saved is not None:
                return saved
    try:
        indices = sample_query_database(n, s["query"], s["train"], s["seed"])
    except ValueError as exc:
        raise DataError(f"dataset '{manifest.name}': {exc}") from None
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.safe_io import atomic_file

    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "split cache") as fh:  # never written through a planted link
                np.savez(fh, **indices)
            break
        except (OSError, CmrBenchError):
            continue
    return indices


def _read_saved_split(path: Path, n: int, n_query: int, n_train: int) -> dict[str, np.ndarray] | None:
    """A saved draw, only when it is one: three sorted index arrays of the recorded sizes
    inside 0..n-1 (query and database disjoint, train within the database). Anything else
    (a damaged or planted file) is ignored and the split is drawn again from its seed."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            out = {k: np.asarray(saved[k]) for k in ("query", "database", "train")}
    except Exception:
        return None
    sizes = {"query": n_query, "database": n - n_query, "train": n_train}
    for k, a in out.items():
        if a.ndim != 1 or len(a) != sizes[k] or not np.issubdtype(a.dtype, np.integer):
            return None
        if len(a) and (a.min() < 0 or a.max() >= n or np.any(np.diff(a) <= 0)):
            return None
    if np.intersect1d(out["query"], out["database"]).size or np.setdiff1d(out["train"], out["database"]).size:
        return None
    return {k: a.astype(np.int64) for k, a in out.items()}


def load_dataset(name_or_manifest: str | os.PathLike, root: str | os.PathLike | None = None, *, checksums: bool = True,
                 train_only: bool = False) -> Dataset:
    """Load a dataset by name (built-in or in the data root) or by a manifest path.

    `train_only`: only the splits some protocol trains on, for `cmr-bench tune`, so that tuning
    provably never reads test data: a fixed split's other files are neither opened nor
    checksummed (a file shared with the train arrays is still read whole: its train keys are
    needed); a sampled split keeps only the training rows of its one file. `run` never uses it."""
    root_path = data_root(root)
    try:
        manifest = find_manifest(name_or_manifest, root_path)
    except (TypeError, ValueError, AttributeError) as exc:  # a key of the wrong type the parser did not check
        raise DataError(f"malformed manifest {name_or_manifest}: {type(exc).__name__}: {exc}") from None
    protocols = dict(manifest.protocols)
    if manifest.split_kind == "synthetic":
        params = dict(manifest.synthetic)
        params.setdefault("num_classes", manifest.num_classes)
        params.setdefault("multilabel", manifest.label_kind == "multi")
        try:
            ds = make_synthetic(name=manifest.name, **params)
        except (TypeError, ValueError) as exc:
            raise DataError(f"malformed manifest {manifest.path} [synthetic]: {exc}") from None
        ds.protocols, ds.manifest = protocols, manifest.raw
        return ds.training_view() if train_only else ds

    folder = files_dir(manifest, root_path)
    wanted = sorted({p.train for p in protocols.values()}) if train_only else None
    groups = (wanted if manifest.split_kind == "fixed" else ["all"]) if train_only else None
    check_files(manifest, folder, checksums=checksums, groups=groups)
    splits: dict[str, Split] = {}
    if manifest.split_kind == "fixed":
        for group in groups or manifest.arrays:
            image, text, labels = _read_group(manifest, folder, group)
            splits[group] = Split(group, image, text, labels, np.arange(len(image)))
        dims = {(s.image.shape[1], s.text.shape[1]) for s in splits.values()}
        if len(dims) > 1:
            shown = ", ".join(f"{k} {s.image.shape[1]}/{s.text.shape[1]}" for k, s in splits.items())
            raise DataError(f"dataset '{manifest.name}': splits differ in feature dims (image/text: {shown})")
    else:  # sampled
        image, text, labels = _read_group(manifest, folder, "all")
        for split_name, rows in _sampled_indices(manifest, len(image), root_path).items():
            if wanted is not None and split_name not in wanted:
                continue
            splits[split_name] = Split(split_name, image[rows], text[rows], labels[rows], rows)
    expected = manifest.split.get("sizes", {})
    for split_name, size in expected.items():
        if split_name in splits and len(splits[split_name]) != size:
            raise DataError(
                f"dataset '{manifest.name}': split '{split_name}' has {len(splits[split_name])} rows, manifest says {size}"
            )
    return Dataset(
        name=manifest.name,
        splits=splits,
        protocols=protocols,
        num_classes=manifest.num_classes,
        label_kind=manifest.label_kind,
        class_names=manifest.class_names,
        manifest=manifest.raw,
    )
