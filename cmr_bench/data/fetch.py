"""Getting datasets into the data root: download from the public source (or a mirror) with
checksum verification, atomically; import a user's folder; verify what is there."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cmr_bench.data.loader import cached_sha256, files_dir, load_dataset, sha256_file
from cmr_bench.data.manifest import Manifest
from cmr_bench.errors import CmrBenchError, DataError

MIRROR_ENV = "CMR_BENCH_MIRROR"  # <mirror>/<dataset>/<file>, e.g. a local copy served over HTTP


@dataclass
class Report:
    """What a fetch/import/verify did, file by file; `ok` only when the dataset is complete and valid."""

    dataset: str
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def add(self, line: str, ok: bool = True) -> None:
        self.lines.append(line)
        self.ok = self.ok and ok


def _file_url(manifest: Manifest, path: str, base_url: str | None) -> str | None:
    if base_url:
        return base_url.rstrip("/") + "/" + path
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV].rstrip("/") + f"/{manifest.name}/{path}"
    base = manifest.source.get("base_url")
    return base.rstrip("/") + "/" + path if base else None


def download(url: str, dest: Path, expected_sha256: str = "", progress: bool = True, timeout: float = 60.0) -> str:
    """Stream `url` into a temporary file beside `dest`, check its sha256, then rename: an
    interrupted or corrupt download never leaves a file under the final name."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    import hashlib

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress, file=sys.stderr, leave=False)
            while block := response.read(1 << 16):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
            bar.close()
        got = digest.hexdigest()
        if expected_sha256 and got != expected_sha256:
            raise DataError(f"checksum mismatch for {url}: expected {expected_sha256[:12]}..., got {got[:12]}...; nothing was written")
        os.replace(tmp, dest)
        return got
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch(manifest: Manifest, root: Path, base_url: str | None = None, force: bool = False, progress: bool = True) -> Report:
    if manifest.split_kind == "synthetic":
        raise CmrBenchError(f"dataset '{manifest.name}' is generated: nothing to fetch")
    folder = files_dir(manifest, root)
    report = Report(manifest.name)
    for f in manifest.files:
        dest = folder / f.path
        if dest.is_file() and not force and (not f.sha256 or cached_sha256(dest) == f.sha256):
            report.add(f"{f.path}: present")
            continue
        url = _file_url(manifest, f.path, base_url) if (f.fetch or base_url or os.environ.get(MIRROR_ENV)) else None
        if url is None:
            report.add(f"{f.path}: no public download; bring your own (see `cmr-bench data info {manifest.name}`)", ok=False)
            continue
        try:
            download(url, dest, f.sha256, progress=progress)
        except DataError as exc:
            report.add(f"{f.path}: {exc}", ok=False)
            continue
        note = "" if f.sha256 else " (no checksum recorded: shape checked only)"
        report.add(f"{f.path}: downloaded{note}")
    if report.ok:
        _check_loads(manifest, root, report)
    return report


def import_folder(manifest: Manifest, root: Path, source: Path, link: bool = False) -> Report:
    if manifest.split_kind == "synthetic":
        raise CmrBenchError(f"dataset '{manifest.name}' is generated: nothing to import")
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise DataError(f"import source {source} is not a folder")
    folder = files_dir(manifest, root)
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(manifest.name)
    for f in manifest.files:
        src, dest = source / f.path, folder / f.path
        if not src.is_file():
            present = dest.is_file()
            report.add(f"{f.path}: not in {source}" + (" (already in the data root)" if present else ""), ok=present)
            continue
        if f.sha256 and sha256_file(src) != f.sha256:
            report.add(f"{f.path}: checksum mismatch, not imported", ok=False)
            continue
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        if link:
            os.symlink(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        report.add(f"{f.path}: {'linked' if link else 'copied'}")
    if report.ok:
        _check_loads(manifest, root, report)
    return report


def verify(manifest: Manifest, root: Path) -> Report:
    report = Report(manifest.name)
    if manifest.split_kind == "synthetic":
        report.add("generated on the fly: nothing to verify")
        return report
    folder = files_dir(manifest, root)
    for f in manifest.files:
        p = folder / f.path
        if not p.is_file():
            report.add(f"{f.path}: MISSING (looked in {folder})", ok=False)
        elif not f.sha256:
            report.add(f"{f.path}: present, no checksum recorded")
        elif cached_sha256(p) != f.sha256:
            report.add(f"{f.path}: CHECKSUM MISMATCH", ok=False)
        else:
            report.add(f"{f.path}: ok (sha256)")
    if report.ok:
        _check_loads(manifest, root, report)
    return report


def _check_loads(manifest: Manifest, root: Path, report: Report) -> None:
    """Shapes, dims, labels and finiteness, by loading the dataset for real."""
    try:
        ds = load_dataset(manifest.path, root)
    except CmrBenchError as exc:
        report.add(f"load check failed: {exc}", ok=False)
        return
    sizes = ", ".join(f"{name} {len(s)}" for name, s in ds.splits.items())
    report.add(f"loads: {sizes}; image {ds.image_dim}-d, text {ds.text_dim}-d, {ds.num_classes} classes")

