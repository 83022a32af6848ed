"""The reference-run archive (runner/archive.py): a new method's runs join the tables beside the
archived baselines, the user's runs win per entry, and a damaged archive or one made on other data
is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_user_dataset

from cmr_bench.errors import CmrBenchError
from registering import registered
from registering import sign_method as make_sign


def _run(results: Path, methods: str, seeds: str, dataset: str = "synthetic", *extra) -> None:
    from cmr_bench.cli import main

    code = main(["run", "--methods", methods, "--dataset", dataset, "--seeds", seeds, "--results-dir", str(results),
                 "--no-progress", *extra])
    assert code == 0


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(reference store, its archive folder, a user's store): the reference has cca and random
    (and a --set run of cca, never archived); the user ran kcca and cca at another seed."""
    from cmr_bench.runner.archive import build_archive

    base = tmp_path_factory.mktemp("archive")
    ref_store, user = base / "ref-runs", base / "user-runs"
    _run(ref_store, "cca,random", "0")
    _run(ref_store, "cca", "0", "synthetic", "--set", "reg=0.01")
    build_archive(ref_store, "synthetic", base / "reference")
    _run(user, "kcca", "0")
    _run(user, "cca", "1")
    return ref_store, base / "reference", user


def _copy_archive(stores, tmp_path) -> Path:
    ref = tmp_path / "reference"
    shutil.copytree(stores[1], ref)
    return ref


def test_archive_holds_no_codes_and_is_small(stores):
    ref = stores[1] / "synthetic"
    index = json.loads((ref / "archive.json").read_text())
    assert index["runs"] == 2 and index["dataset"] == "synthetic" and index["data"] and index["ap_dtype"] == "float64"
    assert len(index["commits"]) == 1
    npz = sorted(ref.rglob("arrays.npz"))
    assert len(npz) == 2  # the --set run is not a reference row
    for path in npz:
        with np.load(path) as arrays:
            assert sorted(arrays.files) == ["per_query_ap_i2t", "per_query_ap_t2i", "split_query_indices"]
            n_queries = len(arrays["split_query_indices"])
    run = json.loads(next(ref.rglob("run.json")).read_text())
    assert "files" not in run and "runner" not in run and run["environment"]["git"] is not None
    size = sum(p.stat().st_size for p in ref.rglob("*") if p.is_file()) / index["runs"]
    # metadata (run.json, metrics.json, the index) plus two float64 APs and one index per query
    assert size < 5000 + 24 * n_queries, size


def test_archived_per_query_ap_is_the_runs_own(stores):
    from cmr_bench.report.significance import per_query_ap

    ref_store, ref, _ = stores
    for direction in ("i2t", "t2i"):
        stored = per_query_ap(sorted(ref_store.glob("synthetic/real/random/*/seed-0")), direction)
        archived = per_query_ap(sorted(ref.glob("synthetic/real/random/*/seed-0")), direction)
        assert stored.equals(archived)


def test_table_has_user_rows_reference_rows_and_marks_across_them(stores):
    from cmr_bench.report.tables import paper_table

    _, ref, user = stores
    t = paper_table("2", "synthetic", user, reference=ref)
    rec = t.frame.set_index("plugin")  # "method": the display name
    assert rec.loc["kcca", "runs"] == 1 and rec.loc["random", "runs"] == 1 and rec.loc["cca", "runs"] == 1
    # the reference rows got CIs from their archived per-query AP, and the best row is marked against them
    shown = t.display.set_index("Method")
    assert shown.loc["Random", "Img2Txt 95% CI"] and shown.loc["CCA", "Img2Txt 95% CI"]
    assert shown.loc["KCCA", "Img2Txt"].startswith("**")  # best, tested against cca and random (reference)
    note = " ".join(t.notes)
    assert "reference archive" in note and "random" in note
    assert "not rerun here: random." in note  # cca is the user's (see below)


def test_user_runs_win_per_entry(stores):
    from cmr_bench.report.results import collect

    _, ref, user = stores
    runs = collect(user, "synthetic", reference=ref)
    cca = runs[runs["key"] == "cca"]
    assert list(cca["seed"]) == [1] and set(cca["source"]) == {"store"}
    rnd = runs[runs["key"] == "random"]
    assert list(rnd["seed"]) == [0] and set(rnd["source"]) == {"reference"}


def test_no_reference_and_no_archive_mean_the_users_runs_alone(stores, run_cli, tmp_path, monkeypatch):
    _, ref, user = stores
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", user, "--reference", ref,
                             "--no-reference", "--format", "md", "--out", tmp_path / "a")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| Random"))
    assert "not run" in row and "reference archive" not in out
    (tmp_path / "other-datasets").mkdir()  # an archive folder without this dataset: your runs alone
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", user, "--reference",
                             tmp_path / "other-datasets", "--format", "md", "--out", tmp_path / "b")
    assert code == 0 and "not run" in next(line for line in out.splitlines() if line.startswith("| Random"))
    monkeypatch.chdir(tmp_path)  # the default results/reference is absent here: no archive, no error
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", user, "--format", "md",
                             "--out", tmp_path / "d")
    assert code == 0 and "not run" in next(line for line in out.splitlines() if line.startswith("| Random"))
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", user, "--reference",
                             tmp_path / "nowhere", "--out", tmp_path / "e")
    assert code == 2 and "--reference" in err and "no such folder" in err
    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", user, "--reference", ref,
                             "--format", "md", "--out", tmp_path / "c")
    assert code == 0 and "not run" not in next(line for line in out.splitlines() if line.startswith("| Random"))


def test_compare_plot_and_report_read_the_archive(stores, run_cli, tmp_path):
    from cmr_bench.report import figures
    from cmr_bench.report.page import write_report

    _, ref, user = stores
    code, out, err = run_cli("compare", "kcca", "random", "--dataset", "synthetic", "--results-dir", user, "--reference", ref,
                             "--resamples", "50", "--permutations", "50")
    assert code == 0 and "kcca (A, 1 runs) vs random (B, 1 runs)" in out, err
    code, _, err = run_cli("compare", "kcca", "random", "--dataset", "synthetic", "--results-dir", user, "--no-reference")
    assert code == 2 and "no finished runs of 'random'" in err
    groups = figures._groups(user, "synthetic", None, None, reference=ref)
    labels = {spec["method"] for runs in groups.values() for spec, _ in runs}
    assert labels == {"kcca", "cca", "random"}
    assert figures.plot_pr(user, "synthetic", tmp_path / "pr.png", reference=ref)
    html, _ = write_report(user, "synthetic", tmp_path / "report", reference=ref)
    assert "reference archive" in html.read_text(encoding="utf-8")
    # no runs of the user's own: the archive alone still makes a report
    assert write_report(tmp_path / "empty", "synthetic", tmp_path / "report2", reference=ref)


def test_other_data_is_refused_in_one_line(tmp_path, run_cli):
    from cmr_bench.report.tables import paper_table
    from cmr_bench.runner.archive import build_archive

    theirs = write_user_dataset(tmp_path / "theirs" / "mydata", seed=0)
    mine = write_user_dataset(tmp_path / "root" / "mydata", seed=1)  # the same name, other features
    _run(tmp_path / "ref-runs", "cca", "0", str(theirs))
    build_archive(tmp_path / "ref-runs", "mydata", tmp_path / "reference")
    _run(tmp_path / "user", "random", "0", str(mine))
    code, _, err = run_cli("table", "--table", "2", "--dataset", mine, "--results-dir", tmp_path / "user",
                           "--reference", tmp_path / "reference", "--out", tmp_path / "t")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other 'mydata' data" in err and "--no-reference" in err
    assert not (tmp_path / "t").exists()
    code, _, err = run_cli("table", "--table", "2", "--dataset", mine, "--results-dir", tmp_path / "user",
                           "--reference", tmp_path / "reference", "--no-reference", "--out", tmp_path / "t")
    assert code == 0
    # no runs of the user's yet: checked against the data under the data root
    with pytest.raises(CmrBenchError, match="the data under the data root"):
        paper_table("2", "mydata", tmp_path / "nothing", root=tmp_path / "root", reference=tmp_path / "reference")


@pytest.mark.parametrize("damage", ["edit", "unlisted", "index", "missing", "count"])
def test_a_tampered_archive_is_refused(stores, tmp_path, damage, run_cli):
    ref = _copy_archive(stores, tmp_path)
    folder = ref / "synthetic"
    metrics = next(folder.rglob("metrics.json"))
    if damage == "edit":
        text = metrics.read_text()  # one digit of a mAP changed, the size kept: only the sha256 sees it
        at = text.index('"map@all":0.') + len('"map@all":0.')
        metrics.write_text(text[:at] + ("9" if text[at] != "9" else "8") + text[at + 1:])
        assert metrics.stat().st_size == len(text)
        problem = "does not match its sha256"
    elif damage == "unlisted":
        extra = metrics.parent.parent / "seed-7"
        shutil.copytree(metrics.parent, extra)
        problem = "not listed in archive.json"
    elif damage == "index":
        (folder / "archive.json").write_text("{not json")
        problem = "archive.json is unreadable"
    elif damage == "missing":
        (metrics.parent / "arrays.npz").unlink()
        problem = "does not match its sha256"
    else:
        index = json.loads((folder / "archive.json").read_text())
        index["runs"] += 1
        (folder / "archive.json").write_text(json.dumps(index))
        problem = "says 3 runs"
    code, _, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", stores[2],
                           "--reference", ref, "--out", tmp_path / "t")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert problem in err and "--no-reference" in err


def test_archive_command_replaces_only_an_archive(stores, run_cli, tmp_path):
    ref_store = stores[0]
    code, out, err = run_cli("archive", "--dataset", "synthetic", "--results-dir", ref_store, "--out", tmp_path / "ref")
    assert code == 0 and "archived 2 runs" in out and "kB per run" in out
    code, out, err = run_cli("archive", "--dataset", "synthetic", "--results-dir", ref_store, "--out", tmp_path / "ref", "--float32")
    assert code == 0  # an archive is replaced
    with np.load(next((tmp_path / "ref").rglob("arrays.npz"))) as arrays:
        assert arrays["per_query_ap_i2t"].dtype == np.float32
    (tmp_path / "other" / "synthetic").mkdir(parents=True)
    (tmp_path / "other" / "synthetic" / "mine.txt").write_text("x")
    code, out, err = run_cli("archive", "--dataset", "synthetic", "--results-dir", ref_store, "--out", tmp_path / "other")
    assert code == 2 and "is not a reference archive" in err
    assert (tmp_path / "other" / "synthetic" / "mine.txt").read_text() == "x"
    code, out, err = run_cli("archive", "--dataset", "synthetic", "--results-dir", tmp_path / "empty", "--out", tmp_path / "e")
    assert code == 2 and "nothing to archive" in err


def test_hash_entries_are_per_code_length(tmp_path):
    """The archive's 16-bit runs of a hashing method stay in the table beside the user's 128-bit ones."""
    from cmr_bench.report.tables import hash_table
    from cmr_bench.runner.archive import build_archive

    with registered(make_sign("test-sign-ref")):
        _run(tmp_path / "ref-runs", "test-sign-ref", "0,1", "synthetic", "--bits", "16")
        build_archive(tmp_path / "ref-runs", "synthetic", tmp_path / "reference")
        _run(tmp_path / "user", "test-sign-ref", "0", "synthetic", "--bits", "128")
        t = hash_table("synthetic", tmp_path / "user", reference=tmp_path / "reference", hide_missing=True)
        row = t.display.set_index("Method").loc["test-sign-ref"]
        assert row["n"] == "1-2" and row["I→T 16"] != "not run" and row["I→T 128"] != "not run"
        assert any("not rerun here: test-sign-ref (16 bits)" in n for n in t.notes)
        alone = hash_table("synthetic", tmp_path / "user", hide_missing=True).display.set_index("Method").loc["test-sign-ref"]
        assert "I→T 16" not in alone
