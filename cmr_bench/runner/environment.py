"""What a run records about where it ran: versions, git commit and dirty flag, device."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path


CODE_PATHS = ("cmr_bench", "methods", "datasets", "setup.cfg", "setup.py", "pyproject.toml")


def git_state(path: Path | None = None) -> dict:
    cwd = str(path or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        # Untracked code counts too (a new in-tree plugin changes what `--methods all` runs);
        # untracked outputs elsewhere (tables, figures, notes) do not.
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS],
                                   cwd=cwd, capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip() or untracked.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: str) -> dict:
    import numpy
    import scipy
    import torch

    import cmr_bench

    env = {
        "cmr_bench": cmr_bench.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "git": git_state(),
    }
    if device.startswith("cuda"):
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 cpu.max
    or v1 cfs quota/period), so a container limited to 2 CPUs on a 64-core host counts 2."""
    import math
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = None
    try:
        text = (cgroup_root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        try:
            q = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = q / period if q > 0 and period > 0 else None
        except (OSError, ValueError, ZeroDivisionError):
            quota = None
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)
