"""Path safety: every string from a manifest, a command line or a stored run that becomes part
of a path goes through here. A name is either checked (one path component of safe
characters, no leading dot) or mapped to such a component, and a relative file path must stay
inside its folder after symlinks are resolved. Anything else is a one-line error (exit 2)
before a byte is written. See docs/security.md."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from cmr_bench.errors import CmrBenchError

MAX_COMPONENT = 100
# Letters, digits and . _ + - ; must start with a letter or digit (no ".", "..", hidden files).
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class UnsafePathError(CmrBenchError):
    """A name or path that would reach outside its folder, or is not a plain path component."""


def _show(text: str) -> str:
    shown = ascii(text)
    return shown if len(shown) <= 60 else shown[:57] + "...'"


def check_component(text, what: str) -> str:
    """`text` unchanged when it is one safe path component; else UnsafePathError."""
    if not isinstance(text, str):
        raise UnsafePathError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_COMPONENT:
        raise UnsafePathError(f"{what} {_show(text)} is longer than {MAX_COMPONENT} characters")
    if not _COMPONENT.fullmatch(text):
        raise UnsafePathError(f"{what} {_show(text)} is not a plain name "
                              "(letters, digits, '.', '_', '+', '-'; starting with a letter or digit)")
    return text


def safe_component(text: str, limit: int = 60) -> str:
    """Any string as one safe path component: kept when already safe and short, else a slug
    of it plus a short hash of the original (so two different strings never share a name)."""
    text = str(text)
    if len(text) <= limit and _COMPONENT.fullmatch(text):
        return text
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.")[: limit - 9].strip("-.") or "x"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


def check_relative(text, what: str) -> str:
    """A relative POSIX path of safe components (subfolders allowed): no absolute path, no
    '..', no empty or hidden component, no backslash or NUL."""
    if not isinstance(text, str) or not text:
        raise UnsafePathError(f"{what} must be a non-empty relative path")
    if "\\" in text or "\x00" in text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UnsafePathError(f"{what} {_show(text)} must be a relative path inside its folder")
    parts = PurePosixPath(text).parts
    if len(text) > 1000 or not parts:
        raise UnsafePathError(f"{what} {_show(text)} is too long or empty")
    for part in parts:
        if part in (".", ".."):
            raise UnsafePathError(f"{what} {_show(text)} must not contain '{part}'")
        check_component(part, what)
    return text


def is_within(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def confined(root: Path, relative: str, what: str, *, final_may_link: bool = False) -> Path:
    """root/relative, checked: `relative` is a safe relative path and, with every symlink
    resolved, lands inside root. With final_may_link, the last component may be a symlink
    (reading a file a user linked in with `data import --link`); its folder must still be
    inside root. Checks only: the caller creates folders and must call again after."""
    check_relative(relative, what)
    root = Path(root)
    path = root / relative
    if not is_within(path.parent, root):
        raise UnsafePathError(f"{what} {_show(relative)} resolves outside {root} (a symlinked folder?)")
    if not final_may_link and not is_within(path, root):
        raise UnsafePathError(f"{what} {_show(relative)} resolves outside {root} (a symlink?)")
    return path


def make_dirs_within(folder: Path, root: Path, what: str) -> Path:
    """mkdir -p folder, refusing when it is (or becomes, through a symlink) outside root."""
    if not is_within(folder, root):
        raise UnsafePathError(f"{what}: {folder} is outside {root}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CmrBenchError(f"{what}: cannot create {folder}: {exc.strerror or exc}") from None
    if not is_within(folder, root):
        raise UnsafePathError(f"{what}: {folder} resolves outside {root}")
    return folder
