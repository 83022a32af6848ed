"""A plain (non-editable) `pip install .` into a fresh virtual environment gives a working
`cmr-bench` that does not read the checkout: plugins, manifests and published numbers are
installed with the package. (The editable install is what the rest of the suite runs on.)"""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("venv")
    # System site-packages provide torch & co. (no downloads); cmr-bench itself goes into the venv.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation", str(REPO)]
        if _pip_has_python_flag() else
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--prefix", str(env_dir), str(REPO)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env_dir


def _pip_has_python_flag() -> bool:
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in out.split()[1].split(".")[:2])
    return (major, minor) >= (22, 3)


def _run(env_dir, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    return subprocess.run([str(env_dir / "bin" / "cmr-bench"), *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_plain_install_works_outside_the_checkout(plain_install, tmp_path):
    python = plain_install / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import cmr_bench, cmr_bench.methods as m; print(cmr_bench.__file__); print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(plain_install) in line and str(REPO) not in line, line
    proc = _run(plain_install, "list", "methods", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {"cca", "random"} <= {m["name"] for m in json.loads(proc.stdout)}
    proc = _run(plain_install, "list", "datasets", "--json", cwd=tmp_path)
    assert {"wiki", "synthetic"} <= {d["name"] for d in json.loads(proc.stdout)}
    proc = _run(plain_install, "run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", tmp_path / "r", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _run(plain_install, "table", "--table", "2", "--dataset", "synthetic", "--results-dir", tmp_path / "r", "--out", tmp_path / "t", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
