"""Significance in tables and `cmr-bench compare` (issue 14; directional test: issue 26): hand-made per-query AP arrays
with known answers, then the tables and the command on a small stored grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmr_bench.errors import CmrBenchError
from cmr_bench.report import significance as sig


def _series(values, ids=None) -> pd.Series:
    values = np.asarray(values, dtype=np.float64)
    return pd.Series(values, index=np.arange(len(values)) if ids is None else np.asarray(ids))


def test_holm_matches_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 (m=3): 3*0.01=0.03, 2*0.03=0.06, max(0.06, 1*0.04)=0.06
    assert np.allclose(sig.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # capped at 1 and monotone: 2*0.6=1.2 -> 1, then max(1, 0.7) = 1; the order given is kept
    assert np.allclose(sig.holm([0.7, 0.6]), [1.0, 1.0])
    assert np.allclose(sig.holm([0.6, 0.001]), [0.6, 0.002])
    assert np.allclose(sig.holm([0.2]), [0.2])  # one comparison: unchanged


def test_sign_flip_matches_the_exact_hand_value():
    # 5 distinct positive differences: only the identity pattern reaches the observed sum, p = 1 / 2**5
    d = np.array([1, 2, 3, 4, 5]) * 0.01
    assert sig.sign_flip_p(d, 100_000, seed=0)[0] == pytest.approx(1 / 32, abs=0.003)
    assert sig.sign_flip_p(np.zeros(7), 100, seed=0)[0] == 1.0  # identical: no evidence


def test_bootstrap_is_seeded_and_reproducible():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=200)
    a = sig.bootstrap_ci(x, sig.resample_indices(200, 500, seed=7))
    b = sig.bootstrap_ci(x, sig.resample_indices(200, 500, seed=7))
    c = sig.bootstrap_ci(x, sig.resample_indices(200, 500, seed=8))
    assert a == b and a != c
    assert a[0] < x.mean() < a[1] and a[1] - a[0] < 0.2


def test_known_significant_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 0.6, size=300)
    a = np.clip(b + 0.1 + rng.normal(0, 0.02, size=300), 0, 1)
    c = sig.compare(_series(a), _series(b), resamples=1000, seed=0)
    assert c.p_greater == pytest.approx(1 / (1 + sig.PERMUTATIONS)) and c.p_less > 0.99 and c.ci[0] > 0.05 and c.ci[1] < 0.15
    assert c.wins_a > 290 and c.wins_a + c.wins_b + c.ties == 300 and c.diff == pytest.approx(a.mean() - b.mean())


def test_known_tie():
    b = np.linspace(0.2, 0.8, 100)
    a = b + np.where(np.arange(100) % 2 == 0, 0.01, -0.01)  # +-0.01 alternately: mean difference 0
    c = sig.compare(_series(a), _series(b), resamples=1000, seed=0)
    assert c.p_greater > 0.3 and c.p_less > 0.3 and c.ci[0] < 0 < c.ci[1] and c.wins_a == c.wins_b == 50


def test_column_marks_bold_only_when_every_comparison_rejects():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.5, size=200)
    clear = {"best": _series(base + 0.2), "mid": _series(base + 0.1 + rng.normal(0, 0.01, 200)), "low": _series(base)}
    marks = sig.column_marks(clear, resamples=500)
    assert marks["best"].bold and marks["best"].best and not marks["best"].tied
    assert not marks["mid"].tied and marks["mid"].p_holm < 0.05
    # a runner-up indistinguishable from the best: nobody bold, both tied, the clear loser not
    noise = np.where(np.arange(200) % 2 == 0, 0.005, -0.005)  # symmetric: no evidence either way
    noise[0] += 0.001
    close = {"best": _series(base + 0.2), "twin": _series(base + 0.2 - noise), "low": _series(base)}
    marks = sig.column_marks(close, resamples=500)
    top = max(marks, key=lambda k: marks[k].mean)
    assert not any(m.bold for m in marks.values())
    assert marks["best"].tied and marks["twin"].tied and not marks["low"].tied and top in ("best", "twin")
    # Holm across the column: the p printed is the corrected one
    other = "twin" if top == "best" else "best"
    raw, raw2 = sig.sign_flip_p(np.stack([close[top].to_numpy() - close[k].to_numpy() for k in ("low", other)], axis=1))
    assert marks["low"].p_holm == pytest.approx(sig.holm([raw, raw2])[0])


def test_different_query_sets_are_not_paired():
    with pytest.raises(CmrBenchError, match="different query sets"):
        sig.compare(_series([0.1, 0.2, 0.3]), _series([0.1, 0.2, 0.3], ids=[0, 1, 5]))


def test_per_query_ap_averages_seeds_and_drops_excluded_queries(tmp_path):
    for seed, ap in ((0, [0.2, np.nan, 0.6]), (1, [0.4, np.nan, 0.8])):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        np.savez(folder / "arrays.npz", per_query_ap_i2t=np.array(ap), split_query_indices=np.array([10, 11, 12]))
    s = sig.per_query_ap([tmp_path / "seed-0", tmp_path / "seed-1"], "i2t")
    assert list(s.index) == [10, 12] and np.allclose(s.to_numpy(), [0.3, 0.7])
    with pytest.raises(CmrBenchError, match="no per-query AP"):
        sig.per_query_ap([tmp_path / "seed-0"], "t2i")


@pytest.fixture
def small_store(run_cli, tmp_path):
    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "cca,random", "--dataset", "synthetic", "--seeds", "0,1",
                             "--results-dir", results, "--no-progress")
    assert code == 0, out + err
    return results


def test_table_and_compare_on_stored_runs(small_store, run_cli, tmp_path):
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", small_store,
                             "--out", tmp_path / "t", "--format", "csv,md,latex", "--hide-missing")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "t" / "table2.csv").set_index("plugin")  # "method": the display name
    for d in ("img2txt", "txt2img"):
        for m in ("cca", "random"):
            lo, hi = df.loc[m, f"{d}_ci_low"], df.loc[m, f"{d}_ci_high"]
            assert lo <= df.loc[m, f"{d}_mean"] + 1e-3 and df.loc[m, f"{d}_mean"] - 1e-3 <= hi
    md = (tmp_path / "t" / "table2.md").read_text()
    assert "Img2Txt 95% CI" in md and "seed 0" in md
    code, out, err = run_cli("compare", "cca", "random", "--dataset", "synthetic", "--results-dir", small_store, "--json")
    assert code == 0, err
    import json

    res = json.loads(out)
    i2t = res["directions"]["i2t"]
    assert res["seeds_a"] == 2 and i2t["wins_a"] + i2t["wins_b"] + i2t["ties"] == i2t["n_queries"]
    assert i2t["map_a"] == pytest.approx(df.loc["cca", "img2txt_mean"], abs=1e-4)  # same runs, same number
    assert i2t["ci_low"] <= i2t["diff"] <= i2t["ci_high"]
    # the column's marks agree with the pairwise test (two entries: Holm changes nothing)
    mark = df.loc["cca" if i2t["diff"] > 0 else "random", "img2txt_mark"]
    assert (mark == "best") == (i2t["p_a_greater" if i2t["diff"] > 0 else "p_b_greater"] < 0.05)
    assert "sign-flip" in md and "Wilcoxon" not in md


def test_compare_bad_input_is_one_line(small_store, run_cli):
    for argv, message in [
        (["cca", "nope"], "unknown method 'nope'"),
        (["cca", "cca"], "two different entries"),
        (["cca", "random", "--bits", "16"], "at 16 bits"),
        (["cca", "random", "--protocol", "hash"], "under protocol 'hash'"),
        (["cca", "random", "--resamples", "0"], "--resamples"),
        (["cca", "random", "--permutations", "0"], "--permutations"),
    ]:
        code, _out, err = run_cli("compare", *argv, "--dataset", "synthetic", "--results-dir", small_store)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
