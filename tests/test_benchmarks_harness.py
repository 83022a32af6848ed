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
