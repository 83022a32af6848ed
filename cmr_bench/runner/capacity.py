"""How many runs `--jobs auto` (the default) runs at once: one per usable core (each run trains on
`--threads` torch threads), bounded by the memory free for them and, with `--device cuda`, by the
device's free memory, using the per-method peaks in estimate.py. Results never depend on the
choice: every run is seeded on its own and trains on a fixed thread count."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from cmr_bench.errors import CmrBenchError
from cmr_bench.runner.estimate import run_peak_bytes

# Of the memory free now, the share runs may take: the grid's own process, the OS and the page
# cache keep the rest.
MEMORY_SHARE = 0.8
# On a GPU a run holds its tensors, not the interpreter: about this much of the CPU peak.
INTERPRETER_BYTES = 250 * 2**20
JOBS_ENV = "CMR_BENCH_JOBS"  # the default of --jobs where it is not given ("auto" when unset)


@dataclass(frozen=True)
class JobsChoice:
    jobs: int
    cpus: int  # usable cores // threads per run
    memory_jobs: int | None  # runs of the largest pending kind that fit in free memory
    gpu_jobs: int | None  # the same on the CUDA device
    peak_bytes: int  # the largest expected peak of one pending run

    def describe(self) -> str:
        parts = [f"{self.cpus} core(s)"]
        if self.memory_jobs is not None:
            parts.append(f"memory for {self.memory_jobs} run(s) of up to {self.peak_bytes / 2**30:.1f} GB")
        if self.gpu_jobs is not None:
            parts.append(f"GPU memory for {self.gpu_jobs}")
        return f"--jobs auto: {self.jobs} ({', '.join(parts)})"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process's children may still take: MemAvailable, capped by a cgroup memory
    limit (v2 memory.max - memory.current, v1 limit - usage). None when nothing can be read."""
    free = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        free = None
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(cgroup_root / limit_file), _read_int(cgroup_root / usage_file)
        if limit is not None and usage is not None and limit < 2**60:  # v1 writes ~2**63 for "no limit"
            room = max(0, limit - usage)
            free = room if free is None else min(free, room)
            break
    return free


def gpu_free_memory(device: str) -> int | None:
    """Free bytes on the CUDA device `device` names; None off CUDA or when it cannot be read."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        index = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
        return int(torch.cuda.mem_get_info(index)[0])
    except Exception:  # no driver, no device: the CPU bounds alone
        return None


def data_bytes(dataset) -> int:
    """Bytes of the dataset's feature arrays (what each worker process loads)."""
    total = 0
    for split in getattr(dataset, "splits", {}).values():
        for what in ("image", "text"):
            total += int(getattr(getattr(split, what, None), "nbytes", 0) or 0)
    return total


def choose_jobs(specs, dataset_bytes: int, device: str, threads: int = 1, cpus: int | None = None,
                memory: int | None = -1, gpu_memory: int | None = -1) -> JobsChoice:
    """The number of runs to run at once for these pending runs (memory=-1 / gpu_memory=-1:
    read them from the machine; None: unknown, no bound)."""
    from cmr_bench.runner.environment import usable_cpus

    cores = usable_cpus() if cpus is None else int(cpus)
    cpu_jobs = max(1, cores // max(1, int(threads)))
    peak = max((run_peak_bytes(spec.method, dataset_bytes) for spec in specs), default=0)
    memory = available_memory() if memory == -1 else memory
    gpu_memory = gpu_free_memory(device) if gpu_memory == -1 else gpu_memory
    memory_jobs = max(1, int(memory * MEMORY_SHARE // peak)) if memory is not None and peak else None
    gpu_peak = max(1, peak - INTERPRETER_BYTES)
    gpu_jobs = max(1, int(gpu_memory * MEMORY_SHARE // gpu_peak)) if gpu_memory is not None and peak else None
    jobs = min(cpu_jobs, max(1, len(specs)), memory_jobs or math.inf, gpu_jobs or math.inf)
    return JobsChoice(int(max(1, jobs)), cpu_jobs, memory_jobs, gpu_jobs, peak)


def jobs_default() -> str:
    """--jobs when not given: $CMR_BENCH_JOBS, else "auto"."""
    return os.environ.get(JOBS_ENV, "").strip() or "auto"


def parse_jobs(text, what: str = "--jobs") -> int | None:
    """'auto' -> None (chosen per grid by choose_jobs); a whole number >= 1 -> itself."""
    from cmr_bench.runner.values import positive_int

    if str(text).strip().lower() == "auto":
        return None
    jobs = positive_int(text, f"{what} (N or auto)")
    if jobs > 4096:
        raise CmrBenchError(f"{what}: {jobs} worker processes is more than any machine can hold (at most 4096)")
    return jobs
