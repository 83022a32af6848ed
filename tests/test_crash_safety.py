"""Never lose a result: a grid killed with SIGKILL and rerun keeps every finished run and
redoes the interrupted one; two invocations on one store share the grid without running
anything twice; corrupt or half-written run folders are reported and redone; `runs
list|clean` show and tidy the store; diverged training is a failed run, shown as failed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.runner.lock import RunLock, lock_path, probe
from cmr_bench.runner.store import validate_run
from registering import registered



# --- the example plugin package (its test-only `example-chaos` method sleeps, diverges or dies)




def cli_env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["MPLBACKEND"] = "Agg"
    env.pop("RAY_ADDRESS", None)
    return env


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "cmr_bench.cli", *[str(a) for a in args]]


def run_folders(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.rglob("run.json") if not any(s.startswith(".") for s in p.relative_to(results).parts))


def done_folders(results: Path) -> list[Path]:
    return [f for f in run_folders(results) if validate_run(f).status == "done"]


def fingerprint(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())}


def leftovers(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob(".*"))


def wait_for(predicate, timeout: float, what: str, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- SIGKILL part-way, then rerun ----------------------------------------------------------


def test_grid_killed_with_sigkill_then_rerun_keeps_finished_runs_and_redoes_the_rest(plugin_site, tmp_path):
    results = tmp_path / "runs"
    cmd = cli_cmd("run", "--methods", "example-chaos", "--dataset", "synthetic", "--seeds", "0-4",
                  "--set", "sleep_s=0.6", "--results-dir", results, "--no-progress")
    proc = subprocess.Popen(cmd, env=cli_env(plugin_site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(done_folders(results)) >= 2, 90, "two finished runs", proc)
        time.sleep(0.2)  # well inside the next run's 0.6 s fit
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    finished = {f: fingerprint(f) for f in done_folders(results)}
    assert 2 <= len(finished) < 5
    # nothing half-written under a final name
    assert all(validate_run(f).status == "done" for f in run_folders(results))

    rerun = subprocess.run(cmd, env=cli_env(plugin_site), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"5 runs: {len(finished)} already finished, {5 - len(finished)} to run" in rerun.stdout
    for folder, before in finished.items():  # intact and kept: not rewritten
        assert fingerprint(folder) == before, folder
    folders = run_folders(results)
    seeds = sorted(json.loads((f / "run.json").read_text())["spec"]["seed"] for f in folders)
    assert seeds == [0, 1, 2, 3, 4]  # nothing duplicated, nothing missing
    assert all(validate_run(f).status == "done" for f in folders)
    assert leftovers(results) == []  # no temp folders, no lock files


def test_killed_parent_takes_its_workers_with_it(plugin_site, tmp_path):
    """--jobs 2: SIGKILL of the grid's process (only) also ends its workers (PR_SET_PDEATHSIG),
    so nothing keeps writing into the store; the rerun completes the grid."""
    results = tmp_path / "runs"
    cmd = cli_cmd("run", "--methods", "example-chaos", "--dataset", "synthetic", "--seeds", "0-5", "--jobs", "2",
                  "--set", "sleep_s=0.8", "--results-dir", results, "--no-progress")
    proc = subprocess.Popen(cmd, env=cli_env(plugin_site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: len(done_folders(results)) >= 1, 120, "a finished run", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    workers = {json.loads((f / "run.json").read_text())["runner"]["pid"] for f in done_folders(results)}
    assert workers and proc.pid not in workers

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: all(gone(pid) for pid in workers), 10, "the workers to die with their parent")
    count = len(done_folders(results))
    time.sleep(1.2)  # longer than one run's fit: an orphan would have written by now
    assert len(done_folders(results)) == count
    rerun_cmd = [a if a != "2" else "1" for a in cmd]  # --jobs 1: the same store, a different executor
    rerun = subprocess.run(rerun_cmd, env=cli_env(plugin_site), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"6 runs: {count} already finished, {6 - count} to run" in rerun.stdout
    assert sorted(json.loads((f / "run.json").read_text())["spec"]["seed"] for f in run_folders(results)) == list(range(6))
    assert leftovers(results) == []


# --- two invocations at once ---------------------------------------------------------------


def test_two_concurrent_invocations_never_run_a_run_twice(plugin_site, tmp_path):
    results = tmp_path / "runs"
    cmd = cli_cmd("run", "--methods", "example-chaos", "--dataset", "synthetic", "--seeds", "0-5",
                  "--set", "sleep_s=0.3", "--results-dir", results, "--no-progress")
    procs = [subprocess.Popen(cmd, env=cli_env(plugin_site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, out + err
        outs.append(out)
    ran = [set(re.findall(r"seed=(\d+): (?:done|failed) in", out)) for out in outs]
    assert not (ran[0] & ran[1]), outs  # no run executed by both ...
    assert ran[0] | ran[1] == {str(k) for k in range(6)}, outs  # ... and each by one of them
    folders = run_folders(results)
    assert len(folders) == 6 and all(validate_run(f).status == "done" for f in folders)
    executed = {json.loads((f / "run.json").read_text())["runner"]["pid"] for f in folders}
    assert executed <= {p.pid for p in procs}
    assert leftovers(results) == []


def test_lock_is_exclusive_and_a_dead_holders_lock_is_broken(tmp_path):
    folder = tmp_path / "ds" / "real" / "m" / "default-0123456789" / "seed-0"
    a, b = RunLock(folder), RunLock(folder)
    assert a.acquire() and not b.acquire()
    assert a.owner()["pid"] == os.getpid()
    a.release()
    assert b.acquire()
    b.release()
    assert not lock_path(folder).exists()
    # a holder that dies by SIGKILL leaves its file behind, but not its lock
    code = ("import sys, time; from cmr_bench.runner.lock import RunLock; "
            f"lock = RunLock({str(folder)!r}); assert lock.acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert probe(lock_path(folder)) == "held" and not RunLock(folder).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(folder).exists() and probe(lock_path(folder)) == "stale"
    assert json.loads(lock_path(folder).read_text())["pid"] == holder.pid
    c = RunLock(folder)
    assert c.acquire()  # broken: the kernel released the dead holder's lock
    c.release()


# --- corrupt, half-written and replaced-aside folders --------------------------------------


@pytest.fixture
def grid(run_cli, tmp_path):
    results = tmp_path / "runs"

    def run(*extra, methods="cca", seeds="0-3"):
        return run_cli("run", "--methods", methods, "--dataset", "synthetic", "--seeds", seeds,
                       "--results-dir", results, "--no-progress", *extra)

    run.results = results
    return run


def _seed_folder(results: Path, seed: int) -> Path:
    return next(f for f in run_folders(results) if f.name == f"seed-{seed}")


def test_a_run_held_by_another_invocation_is_waited_for_not_repeated(grid):
    import threading

    from cmr_bench.data.loader import load_dataset
    from cmr_bench.runner.execute import execute
    from cmr_bench.runner.grid import expand

    ds = load_dataset("synthetic")
    spec = expand(["cca"], ds, [0])[0]
    other = RunLock(spec.folder(grid.results))  # "another invocation" holds seed 0 ...
    assert other.acquire()

    def finish():  # ... and finishes it a moment later
        time.sleep(1.0)
        execute(spec, ds, "cpu", grid.results)
        other.release()

    t = threading.Thread(target=finish)
    t.start()
    code, out, err = grid(seeds="0,1")
    t.join()
    assert code == 0, out + err
    assert "seed=0: in progress in another invocation (pid" in out
    assert "seed=0: done by another invocation" in out and "seed=0: done in" not in out
    assert "seed=1: done in" in out and "1 run(s) were finished by another invocation" in out
    assert leftovers(grid.results) == []


def test_runs_list_shows_runs_in_progress_and_clean_leaves_them_alone(grid, run_cli):
    assert grid(seeds="0")[0] == 0
    config = _seed_folder(grid.results, 0).parent
    busy = RunLock(config / "seed-5")
    assert busy.acquire()
    try:
        temp = config / f".seed-5.tmp-{os.getpid()}-1"
        temp.mkdir()
        code, out, err = run_cli("runs", "list", "--results-dir", grid.results)
        assert code == 0 and re.search(r"5\s+running\s+pid %d on " % os.getpid(), out), out
        code, out, err = run_cli("runs", "clean", "--results-dir", grid.results)
        assert code == 0 and "kept" in out and temp.exists()
    finally:
        busy.release()
    code, out, err = run_cli("runs", "clean", "--results-dir", grid.results)
    assert "removed 1 item(s)" in out and not temp.exists()


def test_corrupt_and_half_written_runs_are_reported_listed_and_redone(grid, run_cli):
    assert grid()[0] == 0
    f = {k: _seed_folder(grid.results, k) for k in range(4)}
    good = fingerprint(f[3])
    (f[0] / "metrics.json").write_text((f[0] / "metrics.json").read_text()[:40])  # truncated
    (f[1] / "run.json").unlink()  # half-written (an older crash)
    text = (f[2] / "metrics.json").read_text()  # edited by hand, same size, still valid JSON
    at = text.index('"map@all": 0.') + len('"map@all": 0.')
    (f[2] / "metrics.json").write_text(text[:at] + ("9" if text[at] != "9" else "8") + text[at + 1:])
    edited = json.loads((f[2] / "metrics.json").read_text())["i2t"]["map@all"]
    temp = f[3].parent / ".seed-7.tmp-999999-1"
    temp.mkdir()
    (temp / "cmr-bench-run").write_text("{}")  # the store's marker, its first write into a temp folder
    (temp / "run.json").write_text("{")
    stale = f[3].parent / ".seed-7.lock"
    stale.write_text(json.dumps({"pid": 999999, "host": "gone"}))

    code, out, err = run_cli("runs", "list", "--results-dir", grid.results)
    assert code == 0, err
    assert out.count("corrupt") >= 3 and "run.json is missing" in out and "sha256" in out, out
    assert "4 runs: 1 done, 0 failed, 3 corrupt, 0 running; 1 temp folder(s), 1 stale lock(s)" in out
    code, out, err = run_cli("runs", "list", "--results-dir", grid.results, "--json")
    listed = json.loads(out)
    assert {r["status"] for r in listed["runs"]} == {"done", "corrupt"}
    assert {"dataset", "protocol", "method", "variant", "bits", "seed", "status", "map"} <= set(listed["runs"][0])

    code, out, err = grid()
    assert code == 0, out + err
    assert "4 runs: 1 already finished, 3 to run" in out
    assert out.count("corrupt run folder") == 3
    assert all(validate_run(f[k]).status == "done" for k in range(3))
    assert json.loads((f[2] / "metrics.json").read_text())["i2t"]["map@all"] != edited
    assert fingerprint(f[3]) == good

    code, out, err = run_cli("runs", "clean", "--results-dir", grid.results, "--dry-run")
    assert code == 0 and "would remove 2 item(s)" in out and temp.exists() and stale.exists()
    code, out, err = run_cli("runs", "clean", "--results-dir", grid.results)
    assert code == 0 and "removed 2 item(s)" in out
    assert not temp.exists() and not stale.exists() and fingerprint(f[3]) == good
    assert leftovers(grid.results) == []


def test_crash_between_the_two_renames_of_a_replacement_restores_the_old_run(grid):
    assert grid(seeds="0")[0] == 0
    folder = _seed_folder(grid.results, 0)
    before = fingerprint(folder)
    aside = folder.parent / f".{folder.name}.old-12345-{time.time_ns()}"
    os.rename(folder, aside)  # what a crash between "old aside" and "new into place" leaves
    code, out, err = grid(seeds="0")
    assert code == 0, out + err
    assert "restored" in out and "1 runs: 0 already finished, 1 to run" in out
    assert fingerprint(folder) == before and not aside.exists()


# --- diverged training ---------------------------------------------------------------------


def _make_diverging(name: str, code_type: str, mode: str):
    class Diverging(Method):
        info = MethodInfo("Diverging (test)", "test", "test", 2026, status="baseline")
        defaults = {"mode": mode}

        def fit(self, train, val=None):
            import torch

            if self.config["mode"] == "nan-loss-numpy":
                return [{"step": 0, "loss": np.float32("nan")}]
            if self.config["mode"] == "inf-loss-torch":
                return [{"step": 0, "loss": torch.tensor(float("inf"))}]
            return [{"step": 0, "loss": 1.0}]

        def encode(self, features, modality):
            if self.config["mode"] == "nan-codes":
                return np.full((len(features), self.bits or 4), np.nan, dtype=np.float32)
            return np.ones((len(features), self.bits or 4), dtype=np.float32)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    Diverging.name, Diverging.code_type = name, code_type
    return Diverging


@pytest.fixture
def diverging_methods():
    made = [_make_diverging("test-div-real", "real", "nan-loss-numpy"),
            _make_diverging("test-div-torch", "real", "inf-loss-torch"),
            _make_diverging("test-div-hash", "binary", "nan-codes")]
    with registered(*made):
        yield made


def test_diverged_runs_fail_with_reason_and_tables_show_failed(diverging_methods, run_cli, tmp_path):
    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "test-div-real,test-div-torch,cca", "--dataset", "synthetic",
                             "--results-dir", results, "--no-progress")
    assert code == 1 and "2 run(s) failed" in out
    runs = {json.loads((f / "run.json").read_text())["spec"]["method"]: json.loads((f / "run.json").read_text())
            for f in run_folders(results)}
    assert runs["test-div-real"]["status"] == "failed" and "diverged: loss=nan" in runs["test-div-real"]["reason"]
    assert runs["test-div-torch"]["status"] == "failed" and "diverged: loss=inf" in runs["test-div-torch"]["reason"]
    assert runs["cca"]["status"] == "done"
    code, out, err = run_cli("run", "--methods", "test-div-hash", "--bits", "16", "--dataset", "synthetic",
                             "--results-dir", results, "--no-progress")
    assert code == 1
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results,
                             "--out", tmp_path / "t", "--format", "md")
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("|")}
    assert "failed (1)" in rows["test-div-real"] and "failed (1)" in rows["test-div-torch"]
    assert "failed" not in rows["CCA"] and re.search(r"\| 0\.\d{3} ", rows["CCA"])  # one run: no ± (8190124)
    code, out, err = run_cli("table", "--table", "hash", "--dataset", "synthetic", "--results-dir", results,
                             "--out", tmp_path / "t", "--format", "md")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "test-div-hash" in line)
    assert "failed" in row and not re.search(r"\d\.\d{3} ±", row)
    # and `runs clean` removes failed runs (unless --keep-failed)
    code, out, _ = run_cli("runs", "clean", "--results-dir", results, "--keep-failed", "--dry-run")
    assert "would remove 0 item(s)" in out
    code, out, _ = run_cli("runs", "clean", "--results-dir", results)
    assert code == 0 and "removed 3 item(s)" in out
    assert [json.loads((f / "run.json").read_text())["spec"]["method"] for f in run_folders(results)] == ["cca"]
