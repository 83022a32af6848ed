"""The opt-in benchmarks/ folder must stay runnable: its conftest collects bench_*.py files and
keeps pytest-benchmark's fixture working across pytest releases."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "benchmarks" / "conftest.py"


def test_benchmark_fixture_builds_under_this_pytest(tmp_path):
    # pytest 9.2 removed Node._nodeid, which pytest-benchmark reads while building the fixture
    # (every benchmark errored before benchmarks/conftest.py aliased it).
    pytest.importorskip("pytest_benchmark")
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "bench_tiny.py").write_text("def test_tiny(benchmark, report):\n"
                                           "    benchmark(sum, [1, 2])\n"
                                           "    report({'benchmark': 'tiny', 'ratio': 1.0})\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider",
                           "--benchmark-enable", "--rootdir", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_scale_script_measures_staged_schedules_and_retries_failed_rows(tmp_path):
    # CMDN's stage1_epochs (15) exceeded the one epoch the scale script ran, so its row was an
    # error; and an error row counted as done, so a rerun never measured it again.
    import json
    import os

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_nuswide.py"
    env = {**os.environ, "SCALE_DIVISOR": "2000", "OMP_NUM_THREADS": "1"}
    data, out = tmp_path / "data", tmp_path / "scale.json"
    subprocess.run([sys.executable, str(script), "make", "--data", str(data)], env=env, check=True,
                   capture_output=True, timeout=300)
    out.write_text(json.dumps([{"method": "cmdn", "kind": "real", "error": "ValueError: from an earlier run"}]))
    proc = subprocess.run([sys.executable, str(script), "all", "--data", str(data), "--out", str(out), "--only", "cmdn"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert rows[0]["overrides"] == {"stage1_epochs": 1, "epochs": 2} and rows[0]["fit_s_per_epoch"] is not None
