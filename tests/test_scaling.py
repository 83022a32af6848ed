"""Parallel and distributed execution: `--jobs N` worker processes and `--executor ray` give
the same runs, seed for seed, as `--jobs 1`; a worker or task that dies is a failed run and
the rest of the grid goes on. The Ray test starts a real local Ray instance on 127.0.0.1
(marker `ray`; skipped with a reason when Ray is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmr_bench.runner.executors import threads_per_job, usable_cpus
from cmr_bench.runner.store import validate_run

GRID = ["--methods", "cca,random", "--dataset", "synthetic", "--seeds", "0-1"]




def cli(site: Path, *args, timeout=240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["MPLBACKEND"] = "Agg"
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "cmr_bench.cli", *[str(a) for a in args]], env=env,
                          capture_output=True, text=True, timeout=timeout)


def stored(results: Path) -> dict:
    """(method, seed) -> (run.json, metrics.json, arrays) of every run in a store."""
    out = {}
    for run_file in results.rglob("run.json"):
        if any(part.startswith(".") for part in run_file.relative_to(results).parts):
            continue
        run = json.loads(run_file.read_text())
        folder = run_file.parent
        metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else None
        with np.load(folder / "arrays.npz") if (folder / "arrays.npz").is_file() else _empty() as npz:
            arrays = {k: npz[k] for k in npz.files}
        out[(run["spec"]["method"], run["spec"]["seed"])] = (run, metrics, arrays, folder.relative_to(results))
    return out


class _empty:
    files: list = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The grid with --jobs 1 (in this process)."""
    from cmr_bench.cli import main

    results = tmp_path_factory.mktemp("jobs1") / "runs"
    assert main(["run", *GRID, "--results-dir", str(results), "--no-progress"]) == 0
    return stored(results)


def assert_same_runs(ours: dict, reference: dict) -> None:
    for key, (run, metrics, arrays, rel) in reference.items():
        o_run, o_metrics, o_arrays, o_rel = ours[key]
        assert o_run["status"] == "done" and o_rel == rel, key
        assert o_run["spec"] == run["spec"], key
        assert o_metrics == metrics, key  # seed for seed, the very same numbers
        assert set(o_arrays) == set(arrays)
        for name in arrays:
            np.testing.assert_array_equal(o_arrays[name], arrays[name], err_msg=f"{key} {name}")


def test_threads_per_job_divides_the_cores():
    cores = usable_cpus()
    assert threads_per_job(1) == cores
    assert threads_per_job(cores) == 1 and threads_per_job(4 * cores) == 1


def test_jobs_2_equals_jobs_1_and_a_dying_worker_is_a_failed_run(plugin_site, reference, tmp_path):
    results = tmp_path / "runs"
    proc = cli(plugin_site, "run", "--methods", "cca,random,example-chaos", "--dataset", "synthetic", "--seeds", "0-1",
               "--set", "example-chaos.mode=die", "--jobs", "2", "--results-dir", results, "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: some runs failed, the grid went on
    assert "2 run(s) failed" in proc.stdout
    ours = stored(results)
    for seed in (0, 1):
        run = ours[("example-chaos", seed)][0]
        assert run["status"] == "failed" and "worker process died" in run["reason"], run.get("reason")
    assert_same_runs(ours, reference)
    done = [ours[k][0] for k in reference]
    assert {r["runner"]["executor"] for r in done} == {"process"}
    assert all(r["environment"]["torch_threads"] == 1 for r in done)  # --threads default, whatever --jobs is


@pytest.mark.ray
def test_ray_local_instance_equals_jobs_1_and_a_dying_task_is_a_failed_run(plugin_site, reference, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'cmr-bench[ray]')")
    results = tmp_path / "runs"
    proc = cli(plugin_site, "run", "--methods", "cca,random,example-chaos", "--dataset", "synthetic", "--seeds", "0-1",
               "--set", "example-chaos.mode=die", "--executor", "ray", "--jobs", "2",  # ray.init(num_cpus=2) on 127.0.0.1
               "--results-dir", results, "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ours = stored(results)
    for seed in (0, 1):
        run = ours[("example-chaos", seed)][0]
        assert run["status"] == "failed" and "died" in run["reason"], run.get("reason")
        assert validate_run(results / ours[("example-chaos", seed)][3]).status == "failed"
    assert_same_runs(ours, reference)
    assert {ours[k][0]["runner"]["executor"] for k in reference} == {"ray"}
    assert {ours[k][0]["runner"]["node_ip"] for k in reference} == {"127.0.0.1"}  # the local instance is on loopback only


def test_executor_ray_without_ray_is_one_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, out, err = run_cli("run", *GRID, "--executor", "ray", "--results-dir", tmp_path / "runs", "--no-progress")
    assert code == 2 and "pip install \"cmr-bench[ray]\"" in err and len(err.strip().splitlines()) == 1, err
