"""Safe file IO for every file the suite writes or reads by a path it builds.

Write: an unpredictable temporary name in the same folder, created with O_EXCL (so a link
planted there is never followed), written, fsync'ed, then renamed over the final name. The
final name and every folder the suite creates for it must not be symlinks: a planted link is
refused, never followed.

Read: lstat first (a regular file, not a link, of a sane size), then open with O_NOFOLLOW and
O_NONBLOCK (a FIFO swapped in between never blocks) and check again with fstat.

Every failure is a one-line CmrBenchError (exit 2). See docs/security.md."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from cmr_bench.errors import CmrBenchError

# Upper bounds for files read by kind (bytes); generous, but a planted 10 GB file is refused.
MAX_TEXT = 16 * 2**20  # TOML, JSON and Markdown files the suite wrote or a user edits
MAX_FIGURE = 64 * 2**20


_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


class UnsafeFileError(CmrBenchError):
    """A file or folder that is a link, not a regular file, or too large to be what it claims."""


def refuse_link(path: Path, what: str) -> None:
    """UnsafeFileError when `path` is a symlink (dangling or not)."""
    if os.path.islink(path):
        raise UnsafeFileError(f"{what} {path} is a symbolic link; refusing to write through it")


def make_folder(folder: Path, what: str, base: Path | None = None) -> Path:
    """mkdir -p `folder`; refuses when `folder`, or any folder between `base` (exclusive) and
    it, is a symlink or not a folder. Without `base` only `folder` itself is checked (the user
    chose the folders above it)."""
    folder = Path(folder)
    chain = [folder]
    if base is not None:
        try:
            rel = folder.relative_to(base)
        except ValueError:
            rel = None
        if rel is not None:
            chain = [Path(base).joinpath(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    for p in chain:  # before creating: a planted link is never followed by mkdir
        refuse_link(p, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UnsafeFileError(f"{what} {folder} exists and is not a folder") from None
    except OSError as exc:
        raise CmrBenchError(f"{what}: cannot create {folder}: {exc.strerror or exc}") from None
    for p in chain:  # and after: a link swapped in meanwhile
        refuse_link(p, what)
        if not p.is_dir():
            raise UnsafeFileError(f"{what} {p} is not a folder")
    return folder


@contextlib.contextmanager
def atomic_file(path: Path, what: str = "output file"):
    """Yields a binary file object; on success its bytes replace `path` atomically. The final
    name must not be a link or a non-regular file; the temporary name is unpredictable and
    created exclusively, in the same folder."""
    path = Path(path)
    refuse_link(path, what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise CmrBenchError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(f"{what} {path} exists and is not a regular file")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CmrBenchError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: the final file gets the usual mode
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        refuse_link(path, what)  # planted while we wrote: still never replaced through
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CmrBenchError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes, what: str = "output file") -> Path:
    with atomic_file(path, what) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: Path, text: str, what: str = "output file", encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding, "surrogateescape"), what)


def swap_folder(new: Path, final: Path) -> None:
    """Put the complete folder `new` at `final` (same parent): what is already at `final` is
    renamed aside first and deleted only once `new` is in place, so a crash leaves the old or the
    new folder whole under one of the two names, never a mix. OSError is the caller's to word."""
    if os.path.lexists(final):
        old = Path(final).parent / f".{Path(final).name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(final, old)
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, final)


def check_regular(path: Path, what: str, max_bytes: int = MAX_TEXT) -> os.stat_result:
    """lstat `path`: a regular file (not a link, FIFO, device or folder) of at most max_bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CmrBenchError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CmrBenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(f"{what} {path} is a symbolic link; refusing to read through it")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(f"{what} {path} is not a regular file")
    if st.st_size > max_bytes:
        raise UnsafeFileError(f"{what} {path} is {st.st_size} bytes, more than the {max_bytes} such a file may have")
    return st


def read_bytes(path: Path, what: str, max_bytes: int = MAX_TEXT) -> bytes:
    """The bytes of a regular file of a sane size; never blocks on a FIFO, never follows a link."""
    check_regular(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise CmrBenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            raise UnsafeFileError(f"{what} {path} changed into something other than a regular file of a sane size")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{what} {path} grew beyond {max_bytes} bytes while being read")
    return data


def read_text(path: Path, what: str, max_bytes: int = MAX_TEXT) -> str:
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CmrBenchError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
