"""Issue 27.4: small frictions on the way from a new method to a paper table."""

from __future__ import annotations


def test_compare_suggests_the_name_like_run_does(run_cli, tmp_path):
    base = ("--dataset", "synthetic", "--results-dir", tmp_path / "runs")
    code, _, run_err = run_cli("run", "--methods", "rnadom", *base)
    code2, _, err = run_cli("compare", "rnadom", "cca", *base)
    assert code == code2 == 2 and "did you mean random" in err and len(err.strip().splitlines()) == 1, err
    assert "did you mean random" in run_err
    code, _, err = run_cli("compare", "cca", "random[nope]", *base)  # a known method without runs: the store speaks
    assert code == 2 and "no finished runs" in err, err
