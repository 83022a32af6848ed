"""`cmr-bench eval`: JSON and table output, .npy/.npz inputs, every bad input -> exit 2 and
one line on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cmr_bench.evaluation import evaluate, to_jsonable


@pytest.fixture
def files(tmp_path):
    """Hamming codes with ties, multi-hot labels, as .npy files; returns (paths, arrays)."""
    rng = np.random.default_rng(0)
    arrays = {
        "q": np.sign(rng.normal(size=(12, 8))).astype(np.int8),
        "r": np.sign(rng.normal(size=(60, 8))).astype(np.int8),
        "ql": (rng.random((12, 5)) < 0.3).astype(np.int64),
        "rl": (rng.random((60, 5)) < 0.3).astype(np.int64),
    }
    paths = {}
    for name, a in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], a)
    return paths, arrays


def args_for(paths, *extra):
    return ["eval", "--query", paths["q"], "--retrieval", paths["r"], "--query-labels", paths["ql"],
            "--retrieval-labels", paths["rl"], *extra]


def test_json_output_matches_python(run_cli, files):
    paths, a = files
    code, out, err = run_cli(*args_for(paths, "--similarity", "hamming", "--k", "5", "50", "--r", "10", "60", "--json"))
    assert code == 0, err
    got = json.loads(out)
    want = to_jsonable(evaluate(a["q"], a["r"], a["ql"], a["rl"], similarity="hamming", ks=(5, 50), rs=(10, 60)))
    assert list(got) == list(want)
    for key in ("map@all", "map@5", "map@50", "p@10", "p@60"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)
    assert got["pr_curve"]["radius"] == list(range(9))
    assert len(got["per_query_ap"]) == 12 and got["similarity"] == "hamming" and got["ties"] == "average"


def test_options_reach_the_evaluator(run_cli, files):
    paths, a = files
    code, out, _ = run_cli(*args_for(paths, "--similarity", "hamming", "--ties", "stable", "--map-k-denominator", "trec",
                                     "--zero-relevant", "exclude", "--device", "cpu", "--memory-budget-mb", "0.05",
                                     "--json"))
    assert code == 0
    got = json.loads(out)
    want = evaluate(a["q"], a["r"], a["ql"], a["rl"], similarity="hamming", ties="stable", map_k_denominator="trec",
                    zero_relevant="exclude")
    assert got["map@50"] == pytest.approx(want["map@50"], abs=1e-12)
    assert got["ties"] == "stable" and got["map_k_denominator"] == "trec" and got["zero_relevant"] == "exclude"


def test_table_output(run_cli, files):
    paths, _ = files
    code, out, err = run_cli(*args_for(paths, "--similarity", "hamming", "--r", "10"))
    assert code == 0 and err == ""
    assert "12 queries x 60 retrieval items, hamming, ties=average" in out
    for word in ("map@all", "map@50", "p@10", "radius", "precision"):
        assert word in out


def test_real_valued_table_and_profile(run_cli, tmp_path):
    rng = np.random.default_rng(1)
    for name, a in {"q": rng.normal(size=(5, 4)), "r": rng.normal(size=(30, 4)), "ql": rng.integers(0, 3, 5),
                    "rl": rng.integers(0, 3, 30)}.items():
        np.save(tmp_path / f"{name}.npy", a)
    paths = {n: tmp_path / f"{n}.npy" for n in ("q", "r", "ql", "rl")}
    code, out, err = run_cli(*args_for(paths, "--pr-points", "6", "--profile"))
    assert code == 0
    assert "cosine" in out and "recall" in out and "radius" not in out
    assert err.startswith("profile: evaluate") and "ratio" in err


def test_npz_inputs(run_cli, files, tmp_path):
    paths, a = files
    np.savez(tmp_path / "q.npz", codes=a["q"])
    code, out, _ = run_cli(*args_for({**paths, "q": tmp_path / "q.npz"}, "--similarity", "hamming", "--json"))
    assert code == 0
    assert json.loads(out)["map@all"] == pytest.approx(evaluate(a["q"], a["r"], a["ql"], a["rl"], similarity="hamming")["map@all"])


def _bad_cases(tmp_path, paths, a):
    def save(name, arr):
        p = tmp_path / name
        np.save(p, arr)
        return p

    two = tmp_path / "two.npz"
    np.savez(two, x=a["q"], y=a["q"])
    empty_npz = tmp_path / "empty.npz"
    np.savez(empty_npz)
    text = tmp_path / "codes.txt"
    text.write_text("1 2 3\n")
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    nan_q = a["q"].astype(float)
    nan_q[3, 2] = np.nan
    return {
        "missing file": ({"q": tmp_path / "nope.npy"}, [], "no such file"),
        "several arrays in npz": ({"q": two}, [], "holds 2 arrays (x, y)"),
        "no array in npz": ({"q": empty_npz}, [], "holds 0 arrays"),
        "not an array file": ({"q": text}, [], "cannot read"),
        "pickled object array": ({"q": obj}, [], "cannot read"),
        "dimension mismatch": ({"r": save("r3.npy", a["r"][:, :5])}, [], "columns"),
        "count mismatch": ({"ql": save("ql3.npy", a["ql"][:5])}, [], "query labels have 5 rows but query codes have 12"),
        "NaN codes": ({"q": save("nan.npy", nan_q)}, [], "NaN or Inf"),
        "Inf codes": ({"r": save("inf.npy", np.full((60, 8), np.inf))}, [], "NaN or Inf"),
        "labels of different kinds": ({"ql": save("ql1.npy", np.arange(12))}, [], "labels of different kinds"),
        "empty query set": ({"q": save("q0.npy", np.zeros((0, 8))), "ql": save("ql0.npy", np.zeros((0, 5)))}, [], "empty"),
        "empty retrieval set": ({"r": save("r0.npy", np.zeros((0, 8))), "rl": save("rl0.npy", np.zeros((0, 5)))}, [], "empty"),
        "non-binary codes with hamming": ({"q": save("real.npy", a["q"] * 0.5)}, ["--similarity", "hamming"], "binary codes"),
        "1-D codes": ({"q": save("flat.npy", np.ones(12))}, [], "2-D array"),
        "unknown similarity": ({}, ["--similarity", "jaccard"], "unknown similarity 'jaccard'"),
        "unknown tie mode": ({}, ["--ties", "random"], "unknown tie mode"),
        "bad k": ({}, ["--k", "0"], "--k: expected positive integers"),
        "non-integer r": ({}, ["--r", "ten"], "--r: expected positive integers"),
        "bad budget": ({}, ["--memory-budget-mb", "lots"], "--memory-budget-mb: expected a number"),
        "bad device": ({}, ["--device", "tpu"], "unknown device"),
    }


def test_bad_inputs_exit_2_with_one_line(run_cli, files, tmp_path):
    paths, a = files
    for name, (replace, extra, message) in _bad_cases(tmp_path, paths, a).items():
        code, out, err = run_cli(*args_for({**paths, **replace}, *extra))
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cmr-bench: error: "), (name, err)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in err and out == "", name


def test_subprocess_exit_code_and_no_traceback(files, tmp_path):
    paths, a = files
    bad = tmp_path / "bad.npy"
    np.save(bad, a["q"][:, :3])
    cmd = [sys.executable, "-m", "cmr_bench.cli"] + [str(x) for x in args_for({**paths, "r": bad})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "query codes have 8 columns but retrieval codes have 3" in proc.stderr
    ok_cmd = [sys.executable, "-m", "cmr_bench.cli"] + [str(x) for x in args_for(paths, "--json")]
    ok = subprocess.run(ok_cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "map@all" in json.loads(ok.stdout)


def test_eval_is_listed_in_help(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "eval" in out
