"""A local Ray instance must not outlive its driver. Ray's GCS and raylet notice a killed
driver and exit, but its agents (DashboardAgent, RuntimeEnvAgent) are reparented and keep
running. This watchdog is started by RayExecutor right after ray.init, in its own session:
it keeps a list of the driver's descendants (pid + start time, so a reused pid is never
hit), and when the driver goes away (its end of the pipe closes: SIGKILL included) it
terminates whatever of that list is still alive. Linux /proc only; elsewhere it does nothing.

    python -m cmr_bench.runner.ray_watchdog DRIVER_PID   (stdin: a pipe from the driver)
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    if not fields or fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                parents.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def _is_ray(pid: int) -> bool:
    """Only Ray's processes are ever signalled (gcs_server, raylet, agents, ray:: workers)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"ray" in fh.read()
    except OSError:
        return False


def _alive(known: dict[int, int]) -> list[int]:
    return [pid for pid, start in known.items() if (st := _stat(pid)) and st[1] == start]


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    driver = int(args[0])
    if not os.path.isdir("/proc"):
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    born = _stat(driver)
    known: dict[int, int] = {}
    while born is not None:
        known.update({p: s for p, s in descendants(driver).items() if p != me and p not in known and _is_ray(p)})
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # the driver closed the pipe or died
        now = _stat(driver)
        if now is None or now[1] != born[1]:  # gone (or a zombie): a child of Ray may hold the pipe open
            break
    time.sleep(3.0)  # a clean shutdown has stopped everything by now
    for pid in list(known):  # whatever they started meanwhile, too
        known.update({p: s for p, s in descendants(pid).items() if p != me and _is_ray(p)})
    left = _alive(known)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and (left := _alive({p: known[p] for p in left})):
            time.sleep(0.1)
        if not left:
            break
    return 0


if __name__ == "__main__":  # pragma: no cover - a separate process
    sys.exit(main())
