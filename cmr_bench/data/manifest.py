"""Dataset manifests: one TOML file per dataset (the repo's datasets/ folder, installed as
cmr_bench.datasets), or a user's own file. Parsing validates every key and type so that a
malformed manifest fails with one line naming the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cmr_bench.data.types import Protocol
from cmr_bench.errors import DataError, UnknownNameError

SPLIT_KINDS = ("fixed", "sampled", "synthetic")
LABEL_KINDS = ("single", "multi")
MODALITY_KEYS = ("image", "text", "labels")


@dataclass(frozen=True)
class FileSpec:
    path: str
    sha256: str = ""  # "" = no checksum recorded (bring-your-own files)
    fetch: bool = True  # False: no public download exists


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


def parse_manifest(data: dict[str, Any], path: Path) -> Manifest:
    where = str(path)
    name = _need(data, "name", str, where)
    label_kind = _need(data, "label_kind", str, where)
    if label_kind not in LABEL_KINDS:
        raise DataError(f"malformed manifest {where}: label_kind must be one of {LABEL_KINDS}")
    num_classes = _need(data, "num_classes", int, where)
    if num_classes < 1:
        raise DataError(f"malformed manifest {where}: num_classes must be >= 1")
    class_names = data.get("class_names", [])
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise DataError(f"malformed manifest {where}: 'class_names' must be a list of strings")
    for key in ("image_dim", "text_dim"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 1):
            raise DataError(f"malformed manifest {where}: '{key}' must be a positive integer")
    source = data.get("source", {})
    if not isinstance(source, dict) or not all(isinstance(v, str) for v in source.values()):
        raise DataError(f"malformed manifest {where}: [source] must be a table of strings")
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
    if not isinstance(sizes, dict) or not all(isinstance(v, int) for v in sizes.values()):
        raise DataError(f"malformed manifest {where}: split.sizes must map split names to integers")

    files = []
    for i, f in enumerate(raw_files):
        if not isinstance(f, dict):
            raise DataError(f"malformed manifest {where}: files[{i}] must be a table")
        files.append(
            FileSpec(
                path=_need(f, "path", str, f"{where} files[{i}]"),
                sha256=str(f.get("sha256", "")).lower(),
                fetch=bool(f.get("fetch", True)),
            )
        )
    known_files = {f.path for f in files}

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
                for key, kind in (("key", str), ("column", int), ("offset", int)):
                    if key in spec and (isinstance(spec[key], bool) or not isinstance(spec[key], kind)):
                        raise DataError(f"malformed manifest {here}: '{key}' must be {kind.__name__}")
                arrays[group][modality] = ArraySpec(
                    file=file,
                    key=spec.get("key"),
                    column=spec.get("column"),
                    offset=spec.get("offset", 0),
                )
        if kind == "sampled":
            for key in ("seed", "query", "train"):
                _need(split, key, int, f"{where} [split]")
    synthetic = data.get("synthetic", {}) if kind == "synthetic" else {}

    protocols = {}
    for pname, p in _need(data, "protocols", dict, where).items():
        spec = Protocol(
            pname,
            train=_need(p, "train", str, f"{where} [protocols.{pname}]"),
            query=_need(p, "query", str, f"{where} [protocols.{pname}]"),
            retrieval=_need(p, "retrieval", str, f"{where} [protocols.{pname}]"),
            description=str(p.get("description", "")),
        )
        for role in ("train", "query", "retrieval"):
            split_name = getattr(spec, role)
            if sizes and split_name not in sizes:
                raise DataError(f"malformed manifest {where}: protocol '{pname}' uses unknown split '{split_name}'")
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
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed manifest {path}: {exc}") from None
    return parse_manifest(data, path)


def builtin_manifest_paths() -> dict[str, Path]:
    folder = resources.files("cmr_bench.datasets")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def root_manifest_paths(root: Path) -> dict[str, Path]:
    """User manifests dropped into the data root: <root>/<name>.toml or <root>/<name>/manifest.toml."""
    found: dict[str, Path] = {}
    if root.is_dir():
        for p in sorted(root.glob("*.toml")):
            found[p.stem] = p
        for p in sorted(root.glob("*/manifest.toml")):
            found[p.parent.name] = p
    return found


def find_manifest(name_or_path: str | Path, root: Path | None = None) -> Manifest:
    """A dataset name (built-in, or a manifest in the data root) or a path to a .toml file."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        return read_manifest(Path(text))
    known = builtin_manifest_paths()
    if root is not None:
        known = {**root_manifest_paths(root), **known}
    if text not in known:
        raise UnknownNameError("dataset", text, known)
    return read_manifest(known[text])


def all_manifests(root: Path | None = None) -> dict[str, Manifest]:
    paths = builtin_manifest_paths()
    if root is not None:
        paths = {**root_manifest_paths(root), **paths}
    return {name: read_manifest(p) for name, p in sorted(paths.items())}
