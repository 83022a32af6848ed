"""report.html / report.md (issue 16): built from stored runs only, self-contained, escaped."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from report_store import ODD_DEVIATION, ODD_FULL_NAME, ODD_NOTE, TABLE2_ROWS, make_store, odd_method


class Page(HTMLParser):
    """What a browser would see: tables (rows of cell texts), images, links, ids, scripts, text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables, self.images, self.hrefs, self.ids, self.tags = [], [], [], set(), []
        self.text, self._cell, self._row = [], None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(("th" if tag == "th" else "td", "".join(self._cell).strip()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            kinds = {k for k, _ in self._row}
            (self.tables[-1]["head"] if kinds == {"th"} else self.tables[-1]["rows"]).append([c for _, c in self._row])
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with odd_method():
        results = make_store(tmp_path_factory.mktemp("report") / "runs")
        yield results


def _report(store, out: Path, experiment=None, figures=True):
    from cmr_bench.report import figures as figs
    from cmr_bench.report.page import write_report

    if figures:
        figs.plot_pr(store, "synthetic", out / "fig_pr.png")
    return write_report(store, "synthetic", out, experiment=experiment)


def _table(page: Page, first_header: str):
    found = [t for t in page.tables if t["head"] and t["head"][0][0] == first_header]
    assert len(found) == 1, [t["head"] for t in page.tables]
    return found[0]


def test_html_is_self_contained_with_tables_figures_environment(store, tmp_path):
    html_path, md_path = _report(store, tmp_path)
    text = html_path.read_text(encoding="utf-8")
    page = Page(text)
    # offline: no script, no stylesheet or image fetched from anywhere
    assert "script" not in page.tags and "link" not in page.tags
    assert not re.search(r"""src=["']?(https?:)?//""", text)  # links out are fine, loaded resources are not
    # every figure file embedded, byte for byte
    pngs = sorted(p.read_bytes() for p in tmp_path.glob("*.png"))
    assert len(pngs) == 1
    embedded = sorted(base64.b64decode(img["src"].split(",", 1)[1]) for img in page.images)
    assert [img["src"].split(",")[0] for img in page.images] == ["data:image/png;base64"]
    assert embedded == pngs
    # Table II: the rows the store fills, with cca's mean over its two seeds (from metrics.json)
    t2 = _table(page, "Method")
    assert [r[0] for r in t2["rows"]] == TABLE2_ROWS
    cca = [json.loads(p.read_text())["i2t"]["map@all"] for p in store.rglob("cca/*/seed-*/metrics.json")]
    assert len(cca) == 2
    row = dict(zip(t2["head"][0], t2["rows"][0]))
    assert row["Img2Txt"].strip("† ").startswith(f"{np.mean(cca):.3f} ± {np.std(cca, ddof=1):.3f}")
    assert "95% CI" in " ".join(t2["head"][0])  # the significance columns the table carries
    # environment: one row per field, from the runs' run.json
    from cmr_bench.report.page import ENV_FIELDS

    env = _table(page, "Field")
    assert [r[0] for r in env["rows"]] == [label for _, label in ENV_FIELDS]
    torch_row = next(r for r in env["rows"] if r[0] == "torch")
    import torch

    assert torch_row[1] == torch.__version__ and torch_row[2] == "yes"
    # table of contents: every link lands on a section
    local = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert len(local) == 4 and set(local) <= page.ids


def test_text_from_plugins_and_runs_is_escaped(store, tmp_path):
    html_path, md_path = _report(store, tmp_path, figures=False)
    text = html_path.read_text(encoding="utf-8")
    for raw in (ODD_DEVIATION, ODD_FULL_NAME, ODD_NOTE):
        assert raw not in text  # never as markup
    page = Page(text)
    assert "script" not in page.tags and "b" not in page.tags and len(page.images) == 0
    seen = "".join(page.text)
    assert ODD_DEVIATION in seen and ODD_NOTE in seen and f"test-odd: {ODD_FULL_NAME}" in seen  # shown as text
    md = md_path.read_text(encoding="utf-8")
    assert "<script" not in md and "<b>" not in md and "&lt;script&gt;" in md
    assert "\\*not bold\\*" in md and "\\| pipe" in md  # no accidental emphasis, no broken table


def test_markdown_twin_links_figures_beside_it(store, tmp_path):
    html_path, md_path = _report(store, tmp_path / "out dir")
    md = md_path.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((md_path.parent / unquote(link)).is_file() for link in links)
    assert "| CCA |" in md and "## Environment" in md and "## Methods and their deviations from the papers" in md
    for anchor in re.findall(r"\]\(#([^)]+)\)", md):  # GitHub's heading anchors
        assert any(re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") == anchor for h in re.findall(r"^## (.+)$", md, re.M))


def test_runs_that_disagree_on_the_commit_are_called_out(store, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(store, copy)
    run_json = sorted(copy.rglob("random/*/seed-0/run.json"))[0]
    run = json.loads(run_json.read_text())
    run["environment"]["git"] = {"commit": "0123456789abcdef", "dirty": False}  # as another commit would write it
    from cmr_bench.runner.store import DIGEST_KEY, run_digest

    run[DIGEST_KEY] = run_digest(run)  # run.json records a digest of itself
    run_json.write_text(json.dumps(run))
    from cmr_bench.report.page import write_report

    html_path, md_path = write_report(copy, "synthetic", tmp_path / "out")
    page = Page(html_path.read_text(encoding="utf-8"))
    git = next(r for r in _table(page, "Field")["rows"] if r[0] == "git commit")
    assert "0123456789ab (1 runs)" in git[1] and git[2] == "no: 2 values"
    assert "The runs disagree on git commit" in "".join(page.text)
    by_commit = _table(page, "git commit")["rows"]  # which runs each version made
    assert by_commit[1][:2] == ["0123456789ab", "1"] and by_commit[1][2] == "random"
    assert "The runs disagree on git commit" in md_path.read_text()


def test_experiment_declares_tables_and_figure_captions(store, tmp_path):
    from cmr_bench.report import figures as figs

    figs.plot_pr(store, "synthetic", tmp_path / "fig_pr.png")
    shutil.copy(tmp_path / "fig_pr.png", tmp_path / "fig_tsne.png")  # any PNG: the page only embeds it
    shutil.copy(tmp_path / "fig_pr.png", tmp_path / "fig_tsne_hash_64bits.png")  # another page's figure
    experiment = {"name": "demo", "title": "Demo <&> experiment", "description": "Two tables.",
                  "tables": ["2", {"table": "hash", "metric": "map@50"}],
                  "figures": [{"file": "fig_tsne.png", "caption": "Fig. 6 <t-SNE>"}]}
    from cmr_bench.report.page import write_report

    html_path, md_path = write_report(store, "synthetic", tmp_path, experiment=experiment)
    page = Page(html_path.read_text(encoding="utf-8"))
    seen = "".join(page.text)
    assert "Demo <&> experiment" in seen and "Two tables." in seen
    assert "No finished run of ours for this table yet" in seen  # hash was asked for, has no runs
    # only the declared file: fig_pr.png and fig_tsne_hash_64bits.png in the same folder belong to
    # other pages (a declared fig_tsne.png once pulled in every fig_tsne_*.png under its caption)
    assert [img["alt"] for img in page.images] == ["Fig. 6 <t-SNE>"]
    stems = {**experiment, "figures": [{"file": "fig_tsne", "caption": "t"}]}  # a stem stands for its family
    page = Page(write_report(store, "synthetic", tmp_path, experiment=stems)[0].read_text(encoding="utf-8"))
    assert sorted(img["src"][:10] for img in page.images) == ["data:image"] * 2
    html_path, _ = write_report(store, "synthetic", tmp_path, experiment={k: v for k, v in experiment.items() if k != "figures"})
    page = Page(html_path.read_text(encoding="utf-8"))
    assert len(page.images) == 3  # no figures key: every PNG in the folder


def test_report_command(store, run_cli, tmp_path):
    code, out, err = run_cli("report", "--dataset", "synthetic", "--results-dir", store, "--out", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()
    assert "open file://" in out
    code, out, err = run_cli("report", "--dataset", "synthetic", "--results-dir", tmp_path / "empty", "--out", tmp_path / "e")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no stored runs of dataset 'synthetic'" in err
    assert not (tmp_path / "e" / "report.html").exists()
    (tmp_path / "file").write_text("x")
    code, out, err = run_cli("report", "--dataset", "synthetic", "--results-dir", store, "--out", tmp_path / "file")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a folder" in err
    code, out, err = run_cli("report", "--dataset", "../etc", "--results-dir", store)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_experiment_page_lists_only_its_own_table_files(store, tmp_path):
    from cmr_bench.report.page import write_report

    for f in ("table2.csv", "table2.md", "hash_mapall.csv", "summary.md", "report.md", "notes.txt"):
        (tmp_path / f).write_text("x")
    # summary.md: another experiment's page, named outside report-*; hash_mapall.csv: its table
    experiment = {"name": "demo", "tables": ["2"], "figures": [], "table_files": ["table2.csv", "table2.md", "gone.tex"]}
    html_path, md_path = write_report(store, "synthetic", tmp_path, experiment=experiment, name="mine")
    page = Page(html_path.read_text(encoding="utf-8"))
    assert sorted(h for h in page.hrefs if h.startswith(("table", "hash", "summary", "report", "gone"))) == ["table2.csv", "table2.md"]
    assert "summary.md" not in md_path.read_text(encoding="utf-8")
    # a plain report (no experiment) lists every table file but report pages' Markdown and itself
    html_path, _ = write_report(store, "synthetic", tmp_path, name="plain")
    hrefs = Page(html_path.read_text(encoding="utf-8")).hrefs
    assert {"table2.csv", "table2.md", "hash_mapall.csv", "summary.md"} <= set(hrefs)
    assert "report.md" not in hrefs and "plain.md" not in hrefs and "notes.txt" not in hrefs
