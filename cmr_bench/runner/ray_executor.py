"""`--executor ray`: each run is one Ray task on an existing cluster (`--ray-address`), or on
a local instance started for this invocation (bound to 127.0.0.1) when no address is given.

The dataset is put into the object store once; every task computes its run (seed, fit,
encode, evaluate) on whichever node Ray places it and sends the whole record back, and this
process writes it into the results store, under the run's lock. Worker nodes therefore need
cmr-bench and the plugins installed, but no access to the results store or the data root.
A task that dies (its worker crashed, was killed, ran out of memory, or the node was lost) is
not retried (max_retries=0): it is recorded as a failed run with the reason, and the grid
goes on. Ray is an optional extra: `pip install "cmr-bench[ray]"`.
"""

from __future__ import annotations

import logging
import os

from cmr_bench.errors import CmrBenchError
from cmr_bench.runner.executors import FAILED, RECORD, Outcome, usable_cpus


def _ray_task(spec, dataset, device: str, threads: int):  # pragma: no cover - runs in a Ray worker
    import warnings

    from cmr_bench.runner.execute import compute
    from cmr_bench.runner.threads import run_threads
    from cmr_bench.seeding import resolve_device

    with warnings.catch_warnings(), run_threads(threads):
        # The object store hands out read-only arrays (zero copy); plugins only read their
        # inputs (a conformance check), but torch warns when it wraps such arrays.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        # Resolved on the worker: a task without a GPU resource sees no CUDA device.
        record = compute(spec, dataset, resolve_device(device), executor="ray")
    try:
        import ray

        record.run["runner"]["node_ip"] = ray.util.get_node_ip_address()
    except Exception:
        pass
    return record


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_ENV = "CMR_BENCH_RAY_CONNECT_TIMEOUT"  # seconds to reach a cluster (default 60)


def _connect_deadline() -> float:
    raw = os.environ.get(CONNECT_ENV, "")
    try:
        value = float(raw) if raw else 60.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise CmrBenchError(f"{CONNECT_ENV}: expected a positive number of seconds, got {raw!r}")
    return value


def _probe(address: str, timeout: float) -> None:
    """A TCP connection to host:port (plain or ray://) before Ray's own client, which retries
    an unreachable address for minutes: refused or silent means one line now."""
    import socket
    import urllib.parse

    text = address.strip()
    if text == "auto" or text.startswith("local"):
        return
    parsed = urllib.parse.urlsplit(text if "://" in text else f"tcp://{text}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        raise CmrBenchError(f"--ray-address {address!r}: not HOST:PORT, ray://HOST:PORT or auto") from None
    if not host or not port:
        raise CmrBenchError(f"--ray-address {address!r}: not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10.0)) as conn:
            # Ray's servers speak gRPC (HTTP/2): a server that does not answer the HTTP/2
            # preface with a SETTINGS frame is not one, however long Ray would retry it.
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = b""
            while len(head) < 9:
                block = conn.recv(9 - len(head))
                if not block:
                    break
                head += block
    except OSError as exc:
        raise CmrBenchError(f"could not reach the Ray cluster at {address}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(head) < 9 or head[3] != 0x04:
        raise CmrBenchError(f"could not reach the Ray cluster at {address}: the server there does not speak Ray's protocol (gRPC)")


def _init_with_deadline(ray, deadline: float, **kwargs) -> None:
    """ray.init of a remote cluster in a helper thread, given up after `deadline` seconds (Ray
    itself retries a silent or wrong server for minutes)."""
    import threading

    # Ray cannot install its own SIGTERM handler from this thread and says so; ours replaces it.
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in record.getMessage())
    box: dict = {}

    def target():
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="ray-init")
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {deadline:g} s (set {CONNECT_ENV} to wait longer)")
    if "error" in box:
        raise box["error"]


def import_ray(local: bool = False):
    """Import Ray. For a local instance (no --ray-address), first switch Ray to its single-node
    mode, in which the node's address is the loopback (127.0.0.1) and its servers listen
    there only, instead of on every interface: no cluster needs to reach it."""
    if local:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # inherited by the processes Ray starts
    try:
        import ray
    except ImportError:
        raise CmrBenchError("--executor ray needs Ray, an optional extra: pip install \"cmr-bench[ray]\"") from None
    if local and os.environ.get(LOOPBACK_ENV) == "0":
        constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
        if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
            constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before the variable was set
    return ray


def _reason(exc) -> str:
    """One line for a failed Ray task: the plugin's own exception when the task raised,
    else what killed it."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = f"Ray task died: {type(exc).__name__}: {exc}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class RayExecutor:
    name = "ray"

    def __init__(self, dataset, device: str, address: str | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, max_in_flight: int | None = None, local_cpus: int | None = None):
        ray = import_ray(local=not address)
        self.ray = ray
        self.owned = False
        self.refs: dict = {}  # ObjectRef -> token (set first: close() may run before the end of __init__)
        if not ray.is_initialized():
            # Ray's notice that it enabled token auth (it did, and it stays on) is not news each time.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            try:
                if address:
                    deadline = _connect_deadline()
                    _probe(address, deadline)
                    _init_with_deadline(ray, deadline, address=address, logging_level=logging.WARNING)
                else:  # a local start has nothing to wait for; it runs in this (the main) thread
                    ray.init(address="local", num_cpus=local_cpus or usable_cpus(), include_dashboard=False,
                             _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
            except CmrBenchError:
                raise
            except Exception as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise CmrBenchError(f"could not start or reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            self.owned = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if cpus_per_task > cpus:
            self.close()
            raise CmrBenchError(f"--ray-cpus {cpus_per_task:g}: the cluster has only {cpus:g} CPUs")
        if gpus_per_task > gpus:
            self.close()
            raise CmrBenchError(f"--ray-gpus {gpus_per_task:g}: the cluster has {gpus:g} GPUs")
        fits = [int(cpus // cpus_per_task)] if cpus_per_task > 0 else []
        if gpus_per_task > 0:
            fits.append(int(gpus // gpus_per_task))
        self.capacity = int(max_in_flight) if max_in_flight else max(1, min(fits) if fits else 1)
        self.threads = max(1, int(cpus_per_task))
        self.device = device
        self.dataset_ref = ray.put(dataset)
        self.task = ray.remote(_ray_task).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)
        self._next = 0
        self._previous_sigterm = _terminate_cleanly()
        # a local instance's agents would outlive a SIGKILLed driver: a watchdog ends them
        self._watchdog = _start_watchdog() if self.owned and not address else None

    def submit(self, spec) -> int:
        self._next += 1
        ref = self.task.remote(spec, self.dataset_ref, self.device, self.threads)
        self.refs[ref] = self._next
        return self._next

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        ray = self.ray
        if not self.refs:
            return []
        refs = list(self.refs)
        try:
            ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
        except SystemExit:
            if _TERMINATED:  # Ray turns our handler's exit into SystemExit(1) inside its wait
                raise SystemExit(143) from None
            raise
        out = []
        for ref in ready:
            token = self.refs.pop(ref)
            try:
                out.append(Outcome(token, RECORD, record=ray.get(ref)))
            except ray.exceptions.RayError as exc:
                import traceback

                out.append(Outcome(token, FAILED, reason=_reason(exc), detail=traceback.format_exc(limit=4)))
        return out

    def close(self, abort: bool = False) -> None:
        ray = self.ray
        if abort:
            for ref in list(self.refs):
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
        self.refs.clear()
        if self.owned and ray.is_initialized():
            ray.shutdown()
            self.owned = False
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            try:
                watchdog.stdin.close()  # tells it we are done; it exits by itself
            except OSError:
                pass
            self._watchdog = None
        previous = getattr(self, "_previous_sigterm", None)
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
            self._previous_sigterm = None


_TERMINATED = False


def _start_watchdog():
    import subprocess
    import sys

    try:
        return subprocess.Popen([sys.executable, "-m", "cmr_bench.runner.ray_watchdog", str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError:
        return None


def _terminate_cleanly():
    """SIGTERM while Ray runs: unwind like Ctrl-C (the grid cancels the tasks, shuts Ray down
    and keeps every finished run) and exit 143 with one line, instead of Ray's own handler
    aborting the process (-6, a C++ stack). Returns the handler it replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        import sys

        global _TERMINATED
        _TERMINATED = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        print("cmr-bench: terminated (SIGTERM); finished runs are kept", file=sys.stderr)
        raise SystemExit(143)

    return signal.signal(signal.SIGTERM, handler)
