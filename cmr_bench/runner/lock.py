"""One lock per run, so that two invocations on the same results store never run the same
run at once and never write the same folder together.

The lock is `fcntl.flock` on a small file beside the run's folder:
`<config folder>/.seed-<k>.lock`, holding the owner's pid, host and start time (for people
and for `cmr-bench runs list`). The kernel drops a flock when its process dies, however it
dies (SIGKILL included), so a lock of a dead process is never "held": the next invocation
simply takes it, and `cmr-bench runs clean` removes the leftover file. flock works on local
disks and on NFS (Linux emulates it with POSIX byte-range locks).

Release unlinks the file while still holding it; an acquirer checks that the file it locked
is still the one at the path (same inode) and retries otherwise, the usual race-free pattern.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from cmr_bench.errors import StoreError


def lock_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def owner_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def read_owner(path: Path) -> dict:
    try:
        path = Path(path)
        if path.is_symlink() or not path.is_file():
            return {}
        with open(path, "rb") as fh:
            data = json.loads(fh.read(4096) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def describe_owner(owner: dict) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" + (f" since {owner['since']}" if owner.get("since") else "")


class RunLock:
    """Non-blocking exclusive lock of one run folder (the folder need not exist yet)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = lock_path(self.folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; False when another process (or another RunLock here) holds it."""
        import fcntl

        if self._fd is not None:
            return True
        try:
            return self._acquire(fcntl)
        except OSError as exc:  # disk full, read-only store, a folder where the lock belongs, a link loop
            raise StoreError.from_os("lock", self.path, exc) from None

    def _acquire(self, fcntl) -> bool:
        for _ in range(100):
            try:
                # O_NOFOLLOW: a planted symlink must not make us create or truncate a file elsewhere
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except FileNotFoundError:  # no folder yet (or `runs clean` just pruned it)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: held elsewhere
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and unlinked) it between our open and flock
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(owner_info()).encode())
            except OSError:  # disk full: the lock is still held; only its note is missing
                pass
            self._fd = fd
            return True
        raise OSError("the lock file keeps disappearing")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def owner(self) -> dict:
        return read_owner(self.path)

    def __enter__(self):
        if not self.acquire():
            raise BlockingIOError(f"{self.folder} is locked by {describe_owner(self.owner())}")
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):  # pragma: no cover - safety net
        try:
            self.release()
        except Exception:
            pass


def probe(path: Path) -> str:
    """State of a lock file: 'held' (a live process holds it), 'stale' (a leftover file whose
    owner is gone) or 'absent'."""
    import fcntl

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "held"  # unreadable: do not touch
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return "held"
    finally:
        os.close(fd)
    return "stale"


def break_stale(path: Path) -> bool:
    """Remove a lock file nobody holds (taking it first, so a live holder is never broken)."""
    path = Path(path)
    name = path.name
    if not (name.startswith(".") and name.endswith(".lock")):
        return False
    folder = path.parent / name[1:-len(".lock")]
    lock = RunLock(folder)
    if not lock.acquire():
        return False
    lock.release()  # release unlinks the file
    return True
