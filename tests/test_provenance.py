"""Each table names the code that made its runs, and a report shows no path of its maker
(issue 26.4; tests/test_committed_results.py holds the committed tables to it)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cmr_bench.report.results import provenance_note

CLEAN = re.compile(r"Code: all (\d+) runs behind this table were made at git commit ([0-9a-f]{12}), "
                   r"with no uncommitted changes\.")


def frame(*commits):
    return pd.DataFrame([{"key": "cca", "status": "done", "commit": c} for c in commits])


def test_one_clean_commit_is_named():
    notes = provenance_note(frame("0123456789ab", "0123456789ab"), ["cca"])
    assert notes == ["Code: all 2 runs behind this table were made at git commit 0123456789ab, "
                     "with no uncommitted changes."]
    assert CLEAN.fullmatch(notes[0])


@pytest.mark.parametrize("commits, expect", [
    (("0123456789ab", "ba9876543210"), "2 code versions"),
    (("0123456789ab (uncommitted changes)",) * 2, "0123456789ab (uncommitted changes) (2 runs)"),
    (("unknown",), "unknown (1 runs)"),
])
def test_several_commits_or_a_dirty_tree_are_named(commits, expect):
    (note,) = provenance_note(frame(*commits), ["cca"])
    assert "not one clean commit" in note and expect in note
    assert not CLEAN.fullmatch(note)


def test_only_the_rows_shown_and_finished_runs_count():
    runs = pd.concat([frame("0123456789ab"),
                      pd.DataFrame([{"key": "other", "status": "done", "commit": "ba9876543210"},
                                    {"key": "cca", "status": "failed", "commit": "ba9876543210"}])])
    assert CLEAN.fullmatch(provenance_note(runs, ["cca"])[0])
    assert provenance_note(runs, ["nothing"]) == []


def test_table_notes_name_the_runs_commit(tmp_path, monkeypatch):
    """End to end: runs recorded at a commit with uncommitted changes make the table say so."""
    from cmr_bench.cli import main
    from cmr_bench.report.tables import paper_table
    from cmr_bench.runner import environment

    monkeypatch.setattr(environment, "git_state", lambda path=None: {"commit": "f" * 40, "dirty": True})
    assert main(["run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1",
                 "--results-dir", str(tmp_path), "--no-progress"]) == 0
    notes = paper_table("2", "synthetic", tmp_path).notes
    assert "Code: the 2 runs behind this table were made at 1 code versions, not one clean commit: " \
           "ffffffffffff (uncommitted changes) (2 runs)." in notes


def test_report_shows_no_path_of_the_maker(tmp_path, monkeypatch):
    """The store outside the working folder is shown by its name alone; inside it, relative."""
    from cmr_bench.cli import main
    from cmr_bench.report.page import write_report

    store = tmp_path / "secret-place" / "store"
    assert main(["run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0",
                 "--results-dir", str(store), "--no-progress"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    html_path, md_path = write_report(store, "synthetic", tmp_path / "out")
    for text in (html_path.read_text(), md_path.read_text()):
        assert str(tmp_path) not in text and "secret-place" not in text
        assert "stored runs in .../store" in text
    monkeypatch.chdir(tmp_path)
    _, md_path = write_report(store, "synthetic", tmp_path / "out2")
    assert "stored runs in secret-place/store " in md_path.read_text()
