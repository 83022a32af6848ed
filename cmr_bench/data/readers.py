"""Array readers for the formats the literature ships: MATLAB v5 (.mat via scipy), MATLAB
v7.3 (.mat = HDF5, via h5py, transposed back to MATLAB's row-major view), .h5/.hdf5, .npz,
.npy and Wikipedia's tab-separated .list files. Every failure becomes one DataError line."""

from __future__ import annotations

import os
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


ALLOW_EXTERNAL_ENV = "CMR_BENCH_ALLOW_HDF5_EXTERNAL"  # =1: follow external links/storage
MAX_BYTES_ENV = "CMR_BENCH_MAX_ARRAY_BYTES"  # override the memory budget of one array
# A chunked HDF5 dataset may compress well; one that claims more than this ratio of the
# bytes it stores is a decompression bomb or a declared-but-empty dataset.
MAX_HDF5_RATIO = 1000


def memory_budget() -> int:
    """Most bytes one array may take: $CMR_BENCH_MAX_ARRAY_BYTES, else half the memory
    available now (Linux), else 8 GiB."""
    if os.environ.get(MAX_BYTES_ENV, "").strip().isdigit():
        return int(os.environ[MAX_BYTES_ENV])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


def _check_budget(path: Path, key: str, nbytes: int) -> None:
    budget = memory_budget()
    if nbytes > budget:
        raise DataError(f"{path}: array '{key}' declares {nbytes:,} bytes, more than the {budget:,} bytes available "
                        f"for one array (set {MAX_BYTES_ENV} to raise it)")


def _external_allowed() -> bool:
    return os.environ.get(ALLOW_EXTERNAL_ENV, "") == "1"


def _hdf5_object(fh, path: Path, key: str, depth: int = 0):
    """Walk `key` one link at a time without following external links (they name another
    file, which could be any local file, a FIFO or a device)."""
    import h5py

    if depth > 8:
        raise DataError(f"{path}: array '{key}': soft links nested too deep")
    parts = [p for p in key.split("/") if p]
    if not parts:
        raise DataError(f"{path}: empty array key")
    node = fh
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink) and not _external_allowed():
            raise DataError(f"{path}: '{key}' is an HDF5 external link to {link.filename!r}; refused "
                            f"(set {ALLOW_EXTERNAL_ENV}=1 to allow data files that point at other files)")
        if isinstance(link, h5py.SoftLink):
            node = _hdf5_object(fh, path, link.path, depth + 1)
            if node is None:
                return None
        else:
            node = node[part]
    return node


def _read_hdf5(path: Path, key: str, matlab: bool) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            ds = _hdf5_object(fh, path, key)
            if ds is None:
                raise DataError(f"{path}: no array '{key}' (has: {', '.join(sorted(map(str, fh.keys())))})")
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{path}: '{key}' is a group, not an array")
            if not _external_allowed():
                if ds.external:
                    raise DataError(f"{path}: array '{key}' keeps its data in external file(s) "
                                    f"{', '.join(repr(str(e[0])) for e in ds.external)[:200]}; refused "
                                    f"(set {ALLOW_EXTERNAL_ENV}=1 to allow)")
                if ds.is_virtual:
                    raise DataError(f"{path}: array '{key}' is a virtual dataset mapping other files; refused "
                                    f"(set {ALLOW_EXTERNAL_ENV}=1 to allow)")
            nbytes = int(ds.size) * ds.dtype.itemsize
            _check_budget(path, key, nbytes)
            if nbytes and not ds.external and not ds.is_virtual:
                stored = ds.id.get_storage_size()
                if ds.chunks is None and ds.compression is None:
                    offset = ds.id.get_offset()
                    if stored < nbytes or offset is None or offset + nbytes > path.stat().st_size:
                        raise DataError(f"{path}: array '{key}' declares {nbytes:,} bytes but the file holds "
                                        f"{stored:,} of them (truncated or forged)")
                elif stored * MAX_HDF5_RATIO < nbytes:
                    raise DataError(f"{path}: array '{key}' declares {nbytes:,} bytes but stores only {stored:,} "
                                    "(an implausible compression ratio)")
            array = ds[()]
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... for corrupt files
        raise DataError(f"{path}: unreadable HDF5 file ({type(exc).__name__}: {exc})") from None
    # MATLAB stores column-major: a v7.3 (n, d) variable reads as (d, n) in HDF5.
    return np.ascontiguousarray(array.T) if matlab else array


# MAT v5 element data types scipy reads (1-7 integers/single, 9 double, 12/13 int64, 16-18 UTF),
# plus 14 (miMATRIX, nested elements) and 15 (miCOMPRESSED, zlib of elements).
_MAT5_NUMERIC = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}
_MAT5_TEXT = _MAT5_NUMERIC | {16, 17, 18}
_MAT5_TYPES = _MAT5_TEXT | {14, 15}


def _check_mat5(path: Path) -> None:
    """Check the structure of a MATLAB v5 file before scipy reads it. scipy's reader looks up
    each element's type code in a C table without a range check, so a corrupt file (a bad
    type code, or a flag that makes it read one element too many) crashes the interpreter
    (segfault; scipy PR #25349) instead of raising. Raises DataError on anything malformed:
    every element's tag, size and nesting, and the sub-elements each array class needs."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    if len(data) < 128:
        raise DataError(f"{path}: unreadable MATLAB file (truncated header)")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None:
        return  # not v5 (v4 or something else): scipy's own checks apply

    def bad(what: str):
        raise DataError(f"{path}: corrupt MATLAB file ({what})")

    def elements(buf: bytes, start: int, end: int, top: bool) -> list[tuple[int, int, int, int]]:
        """(type, data start, data bytes, tag position) of the elements in buf[start:end]."""
        out, pos = [], start
        while pos < end:
            if end - pos < 8:
                if top and not buf[pos:end].strip(b"\x00"):
                    break  # trailing padding
                bad(f"truncated element at byte {pos}")
            word, nbytes = struct.unpack(order + "II", buf[pos:pos + 8])
            if word >> 16:  # small data element: type and size in one word, data in the next 4 bytes
                mdtype, nbytes, body, step = word & 0xFFFF, word >> 16, pos + 4, 8
                if nbytes > 4:
                    bad(f"bad small element at byte {pos}")
            else:
                mdtype, body = word, pos + 8
                step = 8 + nbytes + (0 if mdtype == 15 else (-nbytes) % 8)
            if mdtype not in _MAT5_TYPES or (mdtype == 15 and not top):
                bad(f"invalid element type {mdtype} at byte {pos}")
            if body + nbytes > end:
                bad(f"element at byte {pos} runs past its end (truncated?)")
            out.append((mdtype, body, nbytes, pos))
            pos += step
        return out

    def ints(buf: bytes, body: int, nbytes: int) -> tuple[int, ...]:
        return struct.unpack(order + "i" * (nbytes // 4), buf[body:body + nbytes - nbytes % 4])

    def matrix(buf: bytes, body: int, nbytes: int, at: int, depth: int) -> None:
        if depth > 32:
            bad("arrays nested too deep")
        if nbytes == 0:
            return  # an empty array
        sub = elements(buf, body, body + nbytes, False)
        if len(sub) < 3 or sub[0][0] != 6 or sub[0][2] != 8 or sub[1][0] not in (5, 6) or sub[1][2] < 8 \
                or sub[1][2] % 4 or sub[2][0] not in (1, 16):
            bad(f"malformed array header at byte {at}")
        flags = struct.unpack(order + "I", buf[sub[0][1]:sub[0][1] + 4])[0]
        cls, complex_ = flags & 0xFF, bool(flags & 0x800)
        dims = ints(buf, sub[1][1], sub[1][2])
        if min(dims) < 0:
            bad(f"negative dimension at byte {at}")
        n = 1
        for d in dims:
            n *= d
        rest = sub[3:]
        if 4 <= cls <= 15:  # char (4), sparse (5), numeric (6-15)
            wanted = (3 if cls == 5 else 1) + complex_
            allowed = _MAT5_TEXT if cls == 4 else _MAT5_NUMERIC
            if len(rest) != wanted or any(t not in allowed for t, *_ in rest):
                bad(f"array data at byte {at} does not match its class and flags")
            return
        if cls == 3:  # object: class name, then as a struct
            if not rest or rest[0][0] != 1:
                bad(f"malformed object at byte {at}")
            rest = rest[1:]
            cls = 2
        if cls == 2:  # struct: field name length, field names, then one array per field and element
            if len(rest) < 2 or rest[0][0] not in (5, 6) or rest[0][2] != 4 or rest[1][0] != 1:
                bad(f"malformed struct at byte {at}")
            width = ints(buf, rest[0][1], 4)[0]
            if width <= 0 or rest[1][2] % width:
                bad(f"malformed struct field names at byte {at}")
            fields = rest[1][2] // width
            rest = rest[2:]
            if len(rest) != n * fields:
                bad(f"struct at byte {at} has {len(rest)} values for {n} x {fields}")
        elif cls == 1:  # cell: one array per element
            if len(rest) != n:
                bad(f"cell at byte {at} has {len(rest)} values for {n} elements")
        else:
            bad(f"unsupported array class {cls} at byte {at}")
        for t, b, nb, pos in rest:
            if t != 14:
                bad(f"expected an array at byte {pos}")
            matrix(buf, b, nb, pos, depth + 1)

    def top(buf: bytes, start: int, end: int, depth: int) -> None:
        for t, b, nb, pos in elements(buf, start, end, True):
            if t == 14:
                matrix(buf, b, nb, pos, depth)
            elif t == 15:
                if depth:
                    bad(f"nested compressed element at byte {pos}")
                budget = memory_budget()
                try:
                    z = zlib.decompressobj()
                    inner = z.decompress(buf[b:b + nb], budget)
                except zlib.error as exc:
                    bad(f"compressed element at byte {pos}: {exc}")
                if z.unconsumed_tail:
                    raise DataError(f"{path}: a compressed variable expands to more than the {budget:,} bytes "
                                    f"available for one array (set {MAX_BYTES_ENV} to raise it)")
                top(inner, 0, len(inner), depth + 1)

    top(data, 128, len(data), 0)


def _read_mat(path: Path, key: str) -> np.ndarray:
    if _is_hdf5(path):
        return _read_hdf5(path, key, matlab=True)
    import scipy.io

    _check_mat5(path)

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


def _check_npz_member(path: Path, key: str) -> None:
    """The declared shape of an .npz member against the bytes the archive says it holds and
    the memory budget, before numpy allocates it."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(fh)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > info.file_size:
        raise DataError(f"{path}: array '{key}' declares {nbytes:,} bytes but holds {info.file_size:,} (truncated or forged)")
    _check_budget(path, key, nbytes)


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
                _check_npz_member(path, spec.key)
                array = npz[spec.key]
        elif suffix == ".npy":
            # mapped first: a header that declares more than the file holds fails here,
            # before anything of the declared size is allocated
            mapped = np.load(path, allow_pickle=False, mmap_mode="r")
            _check_budget(path, "", mapped.nbytes)
            array = np.array(mapped)
            del mapped
        elif suffix in (".list", ".txt", ".tsv"):
            array = _read_list(path, spec.column)
        else:
            raise DataError(f"{path}: unsupported format '{suffix}' (.mat, .h5, .npz, .npy, .list)")
    except DataError:
        raise
    except Exception as exc:  # corrupt files raise all kinds (BadZipFile, NotImplementedError, ...)
        raise DataError(f"{path}: unreadable file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return np.asarray(array)
