"""One clean commit behind every committed number (issue 26.4): the committed tables all name
the same commit with a clean tree, and the committed report holds no path of the machine it
was made on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_provenance import CLEAN

ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT / "results" / "wiki"
REPORTS = sorted(p.name for p in WIKI.glob("report*.*") if p.suffix in (".md", ".html"))


def committed_tables():
    return sorted(p for p in WIKI.glob("*.md") if not p.name.startswith("report"))


def test_committed_outputs_exist():
    assert {p.stem for p in committed_tables()} >= {"table2", "table3", "table4", "table5", "hash_mapall", "hash_map50",
                                                     "djsrh_ablation"}
    assert set(REPORTS) >= {"report.md", "report.html", "report-hashing.md", "report-hashing.html"}


@pytest.mark.parametrize("path", committed_tables(), ids=lambda p: p.stem)
def test_committed_table_has_one_clean_commit(path):
    text = path.read_text()
    found = CLEAN.findall(text)
    if not re.search(r"\d ± \d", text) and not found:  # no run of ours in it (Table V without backbone features)
        assert "Code:" not in text
        return
    assert len(found) == 1, f"{path.name}: no single-clean-commit note"
    assert "(uncommitted changes)" not in text


def test_every_committed_table_names_the_same_commit():
    commits = {}
    for path in committed_tables():
        found = CLEAN.findall(path.read_text())
        if found:
            commits[path.stem] = found[0][1]
    assert len(set(commits.values())) == 1, commits
    archive = json.loads((ROOT / "results" / "reference" / "wiki" / "archive.json").read_text())
    assert archive["clean"] and [c[:12] for c in archive["commits"]] == list(set(commits.values())), archive["commits"]


@pytest.mark.parametrize("name", REPORTS)
def test_committed_report_holds_no_absolute_path(name):
    text = (WIKI / name).read_text()
    hits = re.findall(r"(?:(?<=[\s\"'(>=`])|^)(/(?:work|home|tmp|root|Users|var|private|mnt|opt)/[^\s\"'<)`]*)", text, re.M)
    assert not hits, hits[:5]
    assert "(uncommitted changes)" not in text
