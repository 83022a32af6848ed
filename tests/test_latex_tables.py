"""Issue 27.1: LaTeX a paper can paste. The paper's layout at the document's font size (no
scaling), within \\textwidth of a two-column article; notes that compile; display names;
`table --methods` and `--columns`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from report_store import make_store, odd_method

REPO = Path(__file__).resolve().parents[1]
COMMITTED_TEX = sorted((REPO / "results").glob("*/*.tex"))

# Measures every tabular where it stands (inside the float, with the float's \tabcolsep), at
# natural size: the table's own width, never a \resizebox'd one.
MEASURE = (
    "\\newsavebox\\cmrbox\n\\let\\cmrtabular\\tabular\\let\\cmrendtabular\\endtabular\n"
    "\\renewenvironment{tabular}{\\begin{lrbox}{\\cmrbox}\\cmrtabular}{\\cmrendtabular\\end{lrbox}"
    "\\typeout{CMRWIDTH \\the\\wd\\cmrbox\\space of \\the\\textwidth}\\usebox{\\cmrbox}}\n"
)


def _need_pdflatex():
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    if subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True, check=False).returncode != 0:
        pytest.skip("booktabs.sty is not installed (apt-get install texlive-latex-recommended)")


def compile_in_paper(tex: str, where: Path, preamble: str = "") -> tuple[str, list[tuple[float, float]]]:
    """pdflatex on a two-column article holding `tex`; returns (log, [(tabular width, \\textwidth) in pt])."""
    _need_pdflatex()
    where.mkdir(parents=True, exist_ok=True)
    doc = where / "paper.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n" + preamble + MEASURE
                   + "\\begin{document}\n" + "Text of the paper. " * 40 + "\n" + tex + "\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=where,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    widths = [(float(a), float(b)) for a, b in re.findall(r"CMRWIDTH ([0-9.]+)pt of ([0-9.]+)pt", proc.stdout)]
    return proc.stdout, widths


def assert_fits(log: str, widths) -> None:
    assert widths, "no tabular measured"
    for width, textwidth in widths:
        assert width <= textwidth, f"table is {width:.1f}pt wide at natural size, wider than \\textwidth ({textwidth:.1f}pt)"
    assert "Overfull \\hbox" not in log, log[-3000:]
    assert "Float too large" not in log, log[-3000:]


@pytest.mark.skipif(not COMMITTED_TEX, reason="no committed results/*/*.tex")
@pytest.mark.parametrize("path", COMMITTED_TEX, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_tex_compiles_and_fits_a_two_column_paper(path, tmp_path):
    tex = path.read_text()
    assert "\\resizebox" not in tex and "\\scalebox" not in tex  # natural size: readable at the document's font size
    assert_fits(*compile_in_paper(tex, tmp_path))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with odd_method():
        yield make_store(tmp_path_factory.mktemp("latex") / "runs")


def _table(run_cli, store, out: Path, *extra) -> tuple[int, str, str]:
    return run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", store, "--out", out,
                   "--hide-missing", *extra)


def test_default_latex_is_the_papers_layout_and_fits(store, run_cli, tmp_path):
    code, out, err = _table(run_cli, store, tmp_path / "t")
    assert code == 0, err
    tex = (tmp_path / "t" / "table2.tex").read_text()
    rows = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert rows[0] == "Method & Img2Txt & Txt2Img & Avg \\\\"  # one config: one block, the paper's columns
    assert "\\resizebox" not in tex and "95\\% CI" not in tex.split("\\end{tabular}")[0]
    assert rows[1].startswith("CCA & $") and "\\pm" in rows[1]  # display name; mean ± std as one formula
    assert [r.split(" & ")[0] for r in rows[1:]] == ["CCA", "Random", "test-odd", "Label oracle (ceiling)"]
    csv = pd.read_csv(tmp_path / "t" / "table2.csv")
    assert list(csv["method"][:2]) == ["CCA", "Random"] and list(csv["plugin"][:2]) == ["cca", "random"]
    assert "| CCA " in (tmp_path / "t" / "table2.md").read_text()
    assert_fits(*compile_in_paper(tex, tmp_path / "pdf"))


def test_columns_on_request(store, run_cli, tmp_path):
    code, out, err = _table(run_cli, store, tmp_path / "t", "--columns", "ci,n", "--format", "latex")
    assert code == 0, err
    header = next(line for line in (tmp_path / "t" / "table2.tex").read_text().splitlines() if line.startswith("Method"))
    assert header == "Method & Img2Txt & 95\\% CI & Txt2Img & 95\\% CI & Avg & n \\\\"
    code, out, err = _table(run_cli, store, tmp_path / "t", "--columns", "ci,nn")
    assert code == 2 and "did you mean n" in err and len(err.strip().splitlines()) == 1


def test_methods_select_and_order_rows_in_every_format(store, run_cli, tmp_path):
    code, out, err = _table(run_cli, store, tmp_path / "t", "--methods", "random,CCA")
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "t" / "table2.csv")["method"]) == ["Random", "CCA"]
    tex_rows = [line.split(" & ")[0] for line in (tmp_path / "t" / "table2.tex").read_text().splitlines()
                if line.endswith("\\\\")][1:]
    assert tex_rows == ["Random", "CCA"]
    assert "2 row(s) left out (--methods)" in (tmp_path / "t" / "table2.md").read_text()  # the marks saw them
    code, out, err = _table(run_cli, store, tmp_path / "t", "--methods", "cca,randon")
    assert code == 2 and "randon" in err and "did you mean random" in err and len(err.strip().splitlines()) == 1


def test_notes_compile_with_every_special_character_escaped(tmp_path):
    """What the issue saw: "p < 0.05" printed as "p ¡ 0.05", `--config tuned` as "‘–config tuned‘"."""
    from cmr_bench.report.tables import Table, to_latex

    notes = ["Bold: better than every other entry (Holm-corrected, p < 0.05); †: tied.",
             "Run with `--config tuned`; 50% & $5 #1 a_b {x} ~y ^z \\w | \"q\" <b> a < b, c > d; --set stays.",
             "β-VAE → α, γ, η ≤ 2 × 3 — done – ok… ‘q’ “q” ≈ ≥ ≠ ∞ · é ü ✓ ✗ ☃"]
    display = pd.DataFrame([{"Method": "β-VAE", "Img2Txt": "**0.300 ± 0.010**", "Txt2Img": "0.250 ± 0.020 †", "Avg": "0.275"}])
    tex = to_latex(Table("table2", "my_data", "Table II: MAP of cross-modal retrieval", display, display, notes))
    assert "$p < 0.05$" in tex and "\\texttt{-{}-config tuned}" in tex and "-{}-set" in tex
    assert "<" not in tex.replace("$p < 0.05$", "") and "`-" not in tex
    assert "my\\_data" in tex and "$\\beta$-VAE" in tex
    log, widths = compile_in_paper(tex, tmp_path / "ot1")
    assert_fits(log, widths)
    compile_in_paper(tex, tmp_path / "t1", preamble="\\usepackage[T1]{fontenc}\n")
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils): the text itself is not checked")
    for variant in ("ot1", "t1"):
        text = subprocess.run(["pdftotext", "-raw", str(tmp_path / variant / "paper.pdf"), "-"], capture_output=True, text=True, check=False).stdout
        flat = " ".join(text.split())
        assert "p < 0.05" in flat and "--config tuned" in flat and "¡" not in flat and "–config" not in flat, (variant, flat)
        assert "50% & $5 #1 a" in flat and "{x}" in flat and "\\w | \"q\" <b> a < b, c > d" in flat, (variant, flat)
