"""Array readers for the formats the literature ships: MATLAB v5 (.mat via scipy), MATLAB
v7.3 (.mat = HDF5, via h5py, transposed back to MATLAB's row-major view), .h5/.hdf5, .npz,
.npy and Wikipedia's tab-separated .list files. Every failure becomes one DataError line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmr_bench.data.manifest import ArraySpec
from cmr_bench.errors import DataError


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(520)
    # HDF5 signature at offset 0, or at 512 for MATLAB v7.3 files (they carry a 512-byte header).
    sig = b"\x89HDF\r\n\x1a\n"
    return head[:8] == sig or head[512:520] == sig


def _read_hdf5(path: Path, key: str, matlab: bool) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            if key not in fh:
                raise DataError(f"{path}: no array '{key}' (has: {', '.join(sorted(fh.keys()))})")
            array = fh[key][()]
    except OSError as exc:
        raise DataError(f"{path}: unreadable HDF5 file ({exc})") from None
    # MATLAB stores column-major: a v7.3 (n, d) variable reads as (d, n) in HDF5.
    return np.ascontiguousarray(array.T) if matlab else array


def _read_mat(path: Path, key: str) -> np.ndarray:
    if _is_hdf5(path):
        return _read_hdf5(path, key, matlab=True)
    import scipy.io

    try:
        data = scipy.io.loadmat(path, variable_names=[key])
    except Exception as exc:  # scipy raises many types for corrupt files
        raise DataError(f"{path}: unreadable MATLAB file ({type(exc).__name__}: {exc})") from None
    if key not in data:
        try:
            names = [v[0] for v in scipy.io.whosmat(path)]
        except Exception:
            names = []
        raise DataError(f"{path}: no array '{key}' (has: {', '.join(names) or 'nothing readable'})")
    return data[key]


def _read_list(path: Path, column: int | None) -> np.ndarray:
    if column is None:
        raise DataError(f"{path}: a .list array needs 'column' in the manifest")
    values = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                values.append(int(parts[column]))
            except (IndexError, ValueError):
                raise DataError(f"{path}:{lineno}: expected an integer in tab-separated column {column}") from None
    return np.asarray(values, dtype=np.int64)


def read_array(folder: Path, spec: ArraySpec) -> np.ndarray:
    path = folder / spec.file
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat":
            array = _read_mat(path, spec.key or "")
        elif suffix in (".h5", ".hdf5"):
            array = _read_hdf5(path, spec.key or "", matlab=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if spec.key not in npz.files:
                    raise DataError(f"{path}: no array '{spec.key}' (has: {', '.join(npz.files)})")
                array = npz[spec.key]
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".list", ".txt", ".tsv"):
            array = _read_list(path, spec.column)
        else:
            raise DataError(f"{path}: unsupported format '{suffix}' (.mat, .h5, .npz, .npy, .list)")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    return np.asarray(array)
