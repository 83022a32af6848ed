"""Dataset manifests: one TOML file per dataset (the repo's datasets/ folder, installed as
cmr_bench.datasets), or a user's own file. Parsing validates every key and type so that a
malformed manifest fails with one line naming the file and the key."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cmr_bench.data.synthetic import MIN_TRAIN, TRAIN_WHY
from cmr_bench.data.types import Protocol
from cmr_bench.errors import CmrBenchError, DataError, UnknownNameError

# Bounds on manifest numbers: far beyond any real dataset, small enough that nothing built
# from them (label matrices, class counts, index arrays) can exhaust memory or overflow int64.
MAX_CLASSES = 100_000
MAX_ROWS = 10**9
MAX_OFFSET = 2**31
MAX_COLUMN = 10_000
MAX_MANIFEST_BYTES = 1 << 20

SPLIT_KINDS = ("fixed", "sampled", "synthetic")
# optional top-level keys shown as text (`data info`, tables): a string or absent
TEXT_KEYS = ("title", "folder", "description", "citation", "terms", "homepage", "image_features", "text_features")
LABEL_KINDS = ("single", "multi")
MODALITY_KEYS = ("image", "text", "labels")


@dataclass(frozen=True)
class FileSpec:
    path: str
    sha256: str = ""  # "" = no checksum recorded (bring-your-own files)
    fetch: bool = True  # False: no public download exists
    bytes: int | None = None  # expected size; checked on download when there is no sha256


@dataclass(frozen=True)
class ArraySpec:
    file: str
    key: str | None = None  # array key inside .mat/.h5/.npz; None for .npy and .list
    column: int | None = None  # for .list files: 0-based tab-separated column
    offset: int = 0  # added to integer labels (1-based files use -1)


@dataclass
class Manifest:
    name: str
    path: Path
    title: str
    label_kind: str
    num_classes: int
    class_names: list[str]
    image_dim: int | None
    text_dim: int | None
    files: list[FileSpec]
    arrays: dict[str, dict[str, ArraySpec]]  # group ("train", "test" or "all") -> modality -> spec
    split: dict[str, Any]
    protocols: dict[str, Protocol]
    source: dict[str, str] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def split_kind(self) -> str:
        return self.split["kind"]

    @property
    def split_names(self) -> list[str]:
        return list(self.split.get("sizes", {}))

    @property
    def homepage(self) -> str:
        return self.source.get("homepage", "")


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise DataError(f"malformed manifest {where}: missing key '{key}'")
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"malformed manifest {where}: '{key}' must be {name}, got {type(value).__name__}")
    return value


def _bounded_int(value, key: str, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise DataError(f"malformed manifest {where}: '{key}' must be an integer in {lo}..{hi:,}")
    return value


def _component(value, what: str, where: str) -> str:
    from cmr_bench.paths import check_component

    try:
        return check_component(value, what)
    except CmrBenchError as exc:
        raise DataError(f"malformed manifest {where}: {exc}") from None


def parse_manifest(data: dict[str, Any], path: Path) -> Manifest:
    where = str(path)
    name = _component(_need(data, "name", str, where), "dataset name", where)
    label_kind = _need(data, "label_kind", str, where)
    if label_kind not in LABEL_KINDS:
        raise DataError(f"malformed manifest {where}: label_kind must be one of {LABEL_KINDS}")
    num_classes = _bounded_int(_need(data, "num_classes", int, where), "num_classes", where, 1, MAX_CLASSES)
    class_names = data.get("class_names", [])
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise DataError(f"malformed manifest {where}: 'class_names' must be a list of strings")
    for key in ("image_dim", "text_dim"):
        if key in data:
            _bounded_int(data[key], key, where, 1, MAX_ROWS)
    for key in TEXT_KEYS:
        if key in data and not isinstance(data[key], str):
            raise DataError(f"malformed manifest {where}: '{key}' must be a string")
    source = data.get("source", {})
    if not isinstance(source, dict) or not all(isinstance(v, str) for v in source.values()):
        raise DataError(f"malformed manifest {where}: [source] must be a table of strings")
    if source.get("base_url") and not source["base_url"].lower().startswith(("http://", "https://")):
        raise DataError(f"malformed manifest {where}: source.base_url must be an http(s) URL")
    raw_files = data.get("files", [])
    if not isinstance(raw_files, list):
        raise DataError(f"malformed manifest {where}: 'files' must be an array of tables ([[files]])")
    if class_names and len(class_names) != num_classes:
        raise DataError(f"malformed manifest {where}: {len(class_names)} class_names for {num_classes} classes")
    split = _need(data, "split", dict, where)
    kind = _need(split, "kind", str, f"{where} [split]")
    if kind not in SPLIT_KINDS:
        raise DataError(f"malformed manifest {where}: split.kind must be one of {SPLIT_KINDS}, got '{kind}'")
    sizes = split.get("sizes", {})
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes.values()):
        raise DataError(f"malformed manifest {where}: split.sizes must map split names to integers")
    for split_name, size in sizes.items():
        _component(split_name, "split name", where)
        _bounded_int(size, f"split.sizes.{split_name}", where, 1, MAX_ROWS)
    if kind == "fixed" and not sizes:
        raise DataError(f"malformed manifest {where}: a fixed split needs split.sizes (e.g. {{ train = 100, test = 50 }})")

    files = []
    for i, f in enumerate(raw_files):
        here = f"{where} files[{i}]"
        if not isinstance(f, dict):
            raise DataError(f"malformed manifest {where}: files[{i}] must be a table")
        file_path = _need(f, "path", str, here)
        from cmr_bench.paths import check_relative

        try:
            check_relative(file_path, "file path")
        except CmrBenchError as exc:
            raise DataError(f"malformed manifest {here}: {exc}") from None
        digest = f.get("sha256", "")
        if not isinstance(digest, str) or (digest and not re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
            raise DataError(f"malformed manifest {here}: 'sha256' must be 64 hex digits or \"\"")
        if "fetch" in f and not isinstance(f["fetch"], bool):
            raise DataError(f"malformed manifest {here}: 'fetch' must be true or false")
        size = _bounded_int(f["bytes"], "bytes", here, 0, 1 << 50) if "bytes" in f else None
        files.append(FileSpec(path=file_path, sha256=digest.lower(), fetch=f.get("fetch", True), bytes=size))
    known_files = {f.path for f in files}
    if len(known_files) != len(files):
        raise DataError(f"malformed manifest {where}: a file is listed twice in [[files]]")

    arrays: dict[str, dict[str, ArraySpec]] = {}
    if kind != "synthetic":
        raw_arrays = _need(data, "arrays", dict, where)
        expected_groups = ["all"] if kind == "sampled" else list(sizes)
        for group in expected_groups:
            table = _need(raw_arrays, group, dict, f"{where} [arrays]")
            arrays[group] = {}
            for modality in MODALITY_KEYS:
                spec = _need(table, modality, dict, f"{where} [arrays.{group}]")
                file = _need(spec, "file", str, f"{where} arrays.{group}.{modality}")
                if file not in known_files:
                    raise DataError(f"malformed manifest {where}: arrays.{group}.{modality} names '{file}', not in [[files]]")
                here = f"{where} arrays.{group}.{modality}"
                for key, kind_ in (("key", str), ("column", int), ("offset", int)):
                    if key in spec and (isinstance(spec[key], bool) or not isinstance(spec[key], kind_)):
                        raise DataError(f"malformed manifest {here}: '{key}' must be {kind_.__name__}")
                if "column" in spec:
                    _bounded_int(spec["column"], "column", here, 0, MAX_COLUMN)
                if "offset" in spec:
                    _bounded_int(spec["offset"], "offset", here, -MAX_OFFSET, MAX_OFFSET)
                arrays[group][modality] = ArraySpec(
                    file=file,
                    key=spec.get("key"),
                    column=spec.get("column"),
                    offset=spec.get("offset", 0),
                )
        if kind == "sampled":
            _bounded_int(_need(split, "seed", int, f"{where} [split]"), "split.seed", where, 0, 2**63 - 1)
            for key in ("query", "train"):
                _bounded_int(_need(split, key, int, f"{where} [split]"), f"split.{key}", where, 1, MAX_ROWS)
    synthetic: dict[str, Any] = {}
    if kind == "synthetic":
        from cmr_bench.data.synthetic import check_params

        raw_synthetic = data.get("synthetic", {})
        if not isinstance(raw_synthetic, dict):
            raise DataError(f"malformed manifest {where}: [synthetic] must be a table")
        try:
            check_params({"num_classes": num_classes, **raw_synthetic})  # as the loader will build it
            synthetic = dict(raw_synthetic)
        except ValueError as exc:
            raise DataError(f"malformed manifest {where} [synthetic]: {exc}") from None
        # the generated labels follow [synthetic]: the manifest's own label description must agree
        if synthetic.get("num_classes", num_classes) != num_classes:
            raise DataError(f"malformed manifest {where} [synthetic]: num_classes = {synthetic['num_classes']}, "
                            f"the manifest says {num_classes}")
        if synthetic.get("multilabel", label_kind == "multi") != (label_kind == "multi"):
            raise DataError(f"malformed manifest {where} [synthetic]: multilabel = "
                            f"{str(synthetic['multilabel']).lower()} for label_kind '{label_kind}'")

    protocols = {}
    for pname, p in _need(data, "protocols", dict, where).items():
        _component(pname, "protocol name", where)
        if not isinstance(p, dict):
            raise DataError(f"malformed manifest {where}: [protocols.{pname}] must be a table")
        spec = Protocol(
            pname,
            train=_need(p, "train", str, f"{where} [protocols.{pname}]"),
            query=_need(p, "query", str, f"{where} [protocols.{pname}]"),
            retrieval=_need(p, "retrieval", str, f"{where} [protocols.{pname}]"),
            description=p.get("description", ""),
        )
        if not isinstance(spec.description, str):
            raise DataError(f"malformed manifest {where}: protocols.{pname}.description must be a string")
        for role in ("train", "query", "retrieval"):
            split_name = getattr(spec, role)
            if sizes and split_name not in sizes:
                raise DataError(f"malformed manifest {where}: protocol '{pname}' uses unknown split '{split_name}'")
        train_size = split.get("train") if kind == "sampled" else sizes.get(spec.train)
        if isinstance(train_size, int) and train_size < MIN_TRAIN:
            raise DataError(f"malformed manifest {where}: protocol '{pname}' trains on {train_size} item(s){TRAIN_WHY}")
        protocols[pname] = spec
    if not protocols:
        raise DataError(f"malformed manifest {where}: no protocols declared")

    return Manifest(
        name=name,
        path=path,
        title=str(data.get("title", name)),
        label_kind=label_kind,
        num_classes=num_classes,
        class_names=class_names,
        image_dim=data.get("image_dim"),
        text_dim=data.get("text_dim"),
        files=files,
        arrays=arrays,
        split=split,
        protocols=protocols,
        source=dict(source),
        synthetic=dict(synthetic),
        raw=data,
    )


def read_manifest(path: Path) -> Manifest:
    path = Path(path)
    try:
        if not path.is_file():
            raise DataError(f"manifest not found: {path}")
        with open(path, "rb") as fh:
            blob = fh.read(MAX_MANIFEST_BYTES + 1)
    except (OSError, ValueError) as exc:  # unreadable, a NUL in the name, ...
        raise DataError(f"cannot read manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(blob) > MAX_MANIFEST_BYTES:
        raise DataError(f"malformed manifest {path}: larger than {MAX_MANIFEST_BYTES // 1024} KiB")
    try:
        data = tomllib.loads(blob.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed manifest {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    except RecursionError:
        raise DataError(f"malformed manifest {path}: nested too deep") from None
    try:
        return parse_manifest(data, path)
    except RecursionError:
        raise DataError(f"malformed manifest {path}: nested too deep") from None


def builtin_manifest_paths() -> dict[str, Path]:
    folder = resources.files("cmr_bench.datasets")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def root_manifest_paths(root: Path) -> dict[str, Path]:
    """User manifests dropped into the data root: <root>/<name>.toml or <root>/<name>/manifest.toml."""
    found: dict[str, Path] = {}
    try:
        if root.is_dir():
            for p in sorted(root.glob("*.toml")):
                found[p.stem] = p
            for p in sorted(root.glob("*/manifest.toml")):
                found[p.parent.name] = p
    except OSError:  # an unreadable data root lists the built-in datasets only
        pass
    return found


def find_manifest(name_or_path: str | Path, root: Path | None = None) -> Manifest:
    """A dataset name (built-in, or a manifest in the data root) or a path to a .toml file."""
    text = str(name_or_path)
    if "\x00" in text or len(text) > 4096:
        raise DataError(f"invalid dataset name or manifest path {ascii(text[:60])}")
    if text.endswith(".toml") or Path(text).is_file():
        return read_manifest(Path(text))
    known = builtin_manifest_paths()
    if root is not None:
        known = {**root_manifest_paths(root), **known}
    if text not in known:
        raise UnknownNameError("dataset", text, known)
    return read_manifest(known[text])


def all_manifests(root: Path | None = None, errors: dict[str, str] | None = None) -> dict[str, Manifest]:
    """Every manifest by name. With `errors`, a malformed one is recorded there (name ->
    message) and left out, so one bad file in the data root does not hide the others."""
    paths = builtin_manifest_paths()
    if root is not None:
        paths = {**root_manifest_paths(root), **paths}
    out = {}
    for name, p in sorted(paths.items()):
        try:
            out[name] = read_manifest(p)
        except CmrBenchError as exc:
            if errors is None:
                raise
            errors[name] = str(exc)
    return out
