"""Getting datasets into the data root: download from the public source (or a mirror) with
checksum verification, atomically; import a user's folder; verify what is there."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cmr_bench.data.loader import checked_sha256, files_dir, load_dataset, sha256_file
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


DEADLINE_ENV = "CMR_BENCH_FETCH_DEADLINE"  # seconds for one file, headers to last byte
DEFAULT_DEADLINE = 3600.0
TOTAL_DEADLINE_ENV = "CMR_BENCH_FETCH_TOTAL_DEADLINE"  # seconds for a whole `data fetch`
DEFAULT_TOTAL_DEADLINE = 4 * 3600.0
PART = re.compile(r"^\.(?P<name>.+)\.part-(?P<pid>\d+)$")
SCHEMES = ("http://", "https://", "file://")


def _file_url(manifest: Manifest, path: str, base_url: str | None) -> str | None:
    if base_url:
        return _checked_base(base_url, "--base-url") + "/" + path
    if os.environ.get(MIRROR_ENV):
        return _checked_base(os.environ[MIRROR_ENV], MIRROR_ENV) + f"/{manifest.name}/{path}"
    base = manifest.source.get("base_url")
    return _checked_base(base, "the manifest's source.base_url", schemes=SCHEMES[:2]) + "/" + path if base else None


def _checked_base(url: str, what: str, schemes=SCHEMES) -> str:
    import urllib.parse

    text = str(url).strip()
    ok = text.lower().startswith(schemes) and not any(c in text for c in "\x00\r\n\t ")
    if ok:
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # raises ValueError on a malformed port
            ok = bool(parts.netloc) or parts.scheme == "file"
        except ValueError:
            ok = False
    if not ok:
        raise CmrBenchError(f"{what}: not a valid {' or '.join(s[:-3] for s in schemes)} URL: {ascii(text[:80])}")
    return text.rstrip("/")


def _deadline(env: str = DEADLINE_ENV, default: float = DEFAULT_DEADLINE) -> float:
    raw = os.environ.get(env, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise CmrBenchError(f"{env}: expected seconds, got {raw!r}") from None
    if not value > 0 or value != value:
        raise CmrBenchError(f"{env}: expected a positive number of seconds, got {raw!r}")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process: alive
    return True


def remove_stale_parts(dest: Path) -> None:
    """`.<name>.part-<pid>` beside `dest` left by a fetch or import that was killed (its
    process is gone): removed, never followed (unlink of the name only)."""
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return
    for n in names:
        m = PART.match(n)
        if m and m.group("name") == dest.name and (int(m.group("pid")) == os.getpid() or not _alive(int(m.group("pid")))):
            try:
                os.unlink(dest.parent / n)
            except OSError:
                pass


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM while fetching unwinds like Ctrl-C, so the temporary file is removed (a
    SIGKILL's is removed by the next fetch: remove_stale_parts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print("cmr-bench: terminated (SIGTERM); files not finished were removed", file=sys.stderr)
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream(url: str, out, state: dict, timeout: float, max_bytes: int | None) -> None:
    """Runs in a helper thread: copy the response into `out`, recording progress in `state`.
    The main thread owns the deadline; `state['stop']` tells this thread to give up."""
    import hashlib
    import http.client

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            state["length"] = int(length) if length and length.strip().isdigit() else None
            while not state["stop"]:
                block = response.read1(1 << 16) if hasattr(response, "read1") else response.read(1 << 16)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                state["bytes"] += len(block)
                if max_bytes is not None and state["bytes"] > max_bytes:
                    raise DataError(f"more than the expected {max_bytes:,} bytes")
        state["sha256"] = digest.hexdigest()
    except DataError as exc:
        state["error"] = str(exc)
    except urllib.error.HTTPError as exc:
        state["error"] = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        state["error"] = f"{type(exc).__name__}: {str(reason).splitlines()[0][:200] if str(reason) else ''}"
    except Exception as exc:  # anything a malformed response makes the stdlib raise
        state["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"


def download(url: str, dest: Path, expected_sha256: str = "", progress: bool = True, timeout: float = 60.0,
             *, expected_bytes: int | None = None, deadline: float | None = None) -> str:
    """Stream `url` into a temporary file beside `dest` (the caller has confined `dest` to the
    dataset folder), check it, then rename: an interrupted, slow, truncated or corrupt
    download never leaves a file under the final name. Without a sha256 the size must match
    `expected_bytes` or, failing that, the server's Content-Length."""
    import threading

    from tqdm import tqdm

    deadline = _deadline() if deadline is None else deadline
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    state = {"stop": False, "bytes": 0, "length": None, "sha256": None, "error": None}
    try:
        if os.path.lexists(tmp):  # a leftover of a killed fetch (never followed: it may be a link)
            os.unlink(tmp)
        with open(tmp, "xb") as out:
            worker = threading.Thread(target=_stream, args=(url, out, state, min(timeout, deadline), expected_bytes), daemon=True)
            bar = tqdm(unit="B", unit_scale=True, desc=dest.name, disable=not progress, file=sys.stderr, leave=False)
            start = time.monotonic()
            worker.start()
            seen = 0
            while worker.is_alive():
                worker.join(0.2)
                bar.update(state["bytes"] - seen)
                seen = state["bytes"]
                if time.monotonic() - start > deadline:
                    state["stop"] = True
                    bar.close()
                    raise DataError(f"download of {url} failed: not finished after {deadline:g} s "
                                    f"({seen:,} bytes; set {DEADLINE_ENV} for slow links); nothing was written")
            bar.close()
        if state["error"]:
            raise DataError(f"download of {url} failed: {state['error']}; nothing was written")
        got, size = state["sha256"], state["bytes"]
        if expected_sha256 and got != expected_sha256:
            raise DataError(f"checksum mismatch for {url}: expected {expected_sha256[:12]}..., got {got[:12]}...; nothing was written")
        if not expected_sha256:
            want = expected_bytes if expected_bytes is not None else state["length"]
            if want is None:
                raise DataError(f"download of {url}: no sha256 or size recorded and no Content-Length sent, "
                                "so a truncated file cannot be told apart; nothing was written")
            if size != want:
                raise DataError(f"download of {url}: got {size:,} bytes, expected {want:,} (truncated?); nothing was written")
        os.replace(tmp, dest)
        return got
    except OSError as exc:
        raise DataError(f"download of {url} failed: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _dest(folder: Path, rel: str) -> Path:
    """Where a manifest's file goes, confined to the dataset folder (symlinks resolved)."""
    from cmr_bench.paths import confined, make_dirs_within

    path = confined(folder, rel, "manifest file path")
    make_dirs_within(path.parent, folder, "dataset folder")
    return confined(folder, rel, "manifest file path")  # again: the folders now exist


def _writable_folder(manifest: Manifest, root: Path, action: str) -> Path:
    """The dataset folder fetch/import may write: inside the data root, or inside the folder
    of the user's own manifest. A manifest whose `folder` points elsewhere is refused."""
    from cmr_bench.paths import is_within

    folder = files_dir(manifest, root)
    if not (is_within(folder, root) or is_within(folder, manifest.path.parent)):
        raise DataError(f"dataset '{manifest.name}': refusing to {action} into {folder}: it is outside the data root "
                        f"{root} and the manifest's folder (`folder` in {manifest.path})")
    from cmr_bench.paths import make_dirs_within

    base = root if is_within(folder, root) else manifest.path.parent
    return make_dirs_within(folder, base, "dataset folder")


def fetch(manifest: Manifest, root: Path, base_url: str | None = None, force: bool = False, progress: bool = True) -> Report:
    if manifest.split_kind == "synthetic":
        raise CmrBenchError(f"dataset '{manifest.name}' is generated: nothing to fetch")
    if base_url is not None:
        _checked_base(base_url, "--base-url")
    folder = _writable_folder(manifest, root, "fetch")
    report = Report(manifest.name)
    unchecked = []  # downloaded without a sha256: removed again if the dataset then fails to load
    per_file, total = _deadline(), _deadline(TOTAL_DEADLINE_ENV, DEFAULT_TOTAL_DEADLINE)
    start = time.monotonic()
    with _terminate_cleanly():
        for f in manifest.files:
            _fetch_one(manifest, folder, f, base_url, force, progress, report, unchecked,
                       min(per_file, total - (time.monotonic() - start)), total)
    if report.ok:
        _check_loads(manifest, root, report)
        if not report.ok:
            for dest in unchecked:  # never keep an unverifiable file that does not even load
                dest.unlink(missing_ok=True)
                report.add(f"{dest.name}: removed again (no checksum, and the dataset does not load with it)", ok=False)
    return report


def _fetch_one(manifest, folder, f, base_url, force, progress, report, unchecked, deadline, total) -> None:
    """One manifest file: present, downloaded within `deadline` seconds, or reported."""
    dest = _dest(folder, f.path)
    remove_stale_parts(dest)
    if dest.is_file() and not force and (not f.sha256 or checked_sha256(dest, manifest.name) == f.sha256):
        report.add(f"{f.path}: present")
        return
    if deadline <= 0:
        report.add(f"{f.path}: not fetched: the whole fetch may take {total:g} s (set {TOTAL_DEADLINE_ENV})", ok=False)
        return
    url = _file_url(manifest, f.path, base_url) if (f.fetch or base_url or os.environ.get(MIRROR_ENV)) else None
    if url is None:
        report.add(f"{f.path}: no public download; bring your own (see `cmr-bench data info {manifest.name}`)", ok=False)
        return
    try:
        download(url, dest, f.sha256, progress=progress, expected_bytes=f.bytes, deadline=deadline)
    except DataError as exc:
        report.add(f"{f.path}: {exc}", ok=False)
        return
    if not f.sha256:
        unchecked.append(dest)
    note = "" if f.sha256 else " (no checksum recorded: size and shape checked only)"
    report.add(f"{f.path}: downloaded{note}")


def import_folder(manifest: Manifest, root: Path, source: Path, link: bool = False) -> Report:
    from cmr_bench.paths import confined, is_within

    if manifest.split_kind == "synthetic":
        raise CmrBenchError(f"dataset '{manifest.name}' is generated: nothing to import")
    try:
        source = Path(source).expanduser().resolve()
        is_dir = source.is_dir()
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"import source {ascii(str(source))[:80]}: {exc}") from None
    if not is_dir:
        raise DataError(f"import source {source} is not a folder")
    folder = _writable_folder(manifest, root, "import")
    report = Report(manifest.name)
    unchecked = []  # imported without a sha256
    for f in manifest.files:
        # the file itself may be a link the user made in their folder; its folder may not leave it
        src = confined(source, f.path, "manifest file path", final_may_link=True)
        dest = _dest(folder, f.path)
        remove_stale_parts(dest)
        if src.is_symlink() and not is_within(src, source):  # only what the user's folder holds comes in
            report.add(f"{f.path}: a link to {os.path.realpath(src)}, outside {source}: not imported "
                       "(import the folder that holds the file)", ok=False)
            continue
        if not src.is_file():
            present = dest.is_file()
            report.add(f"{f.path}: not in {source}" + (" (already in the data root)" if present else ""), ok=present)
            continue
        try:
            if f.sha256 and sha256_file(src) != f.sha256:
                report.add(f"{f.path}: checksum mismatch, not imported", ok=False)
                continue
            if src.resolve() == dest.resolve():
                report.add(f"{f.path}: already in place")
                continue
            tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
            if os.path.lexists(tmp):  # a leftover (or a planted link): never copied through
                os.unlink(tmp)
            try:
                if link:
                    os.symlink(src, tmp)
                else:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            report.add(f"{f.path}: not imported ({exc.strerror or exc})", ok=False)
            continue
        report.add(f"{f.path}: {'linked' if link else 'copied'}")
        if not f.sha256:
            unchecked.append(dest)
    if report.ok:
        _check_loads(manifest, root, report)
        if not report.ok:
            for dest in unchecked:  # as fetch: an unverifiable file that does not even load is not kept
                dest.unlink(missing_ok=True)
                report.add(f"{dest.name}: removed again (no checksum, and the dataset does not load with it)", ok=False)
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
        elif checked_sha256(p, manifest.name) != f.sha256:
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

