"""Issue 27.2: figures by choice and format: --methods, the format from --out's extension,
display names in legends, hashing figures in code-length order with captions that say what
they show, `plot curves` where the README says."""

from __future__ import annotations

import pytest
from report_store import make_store, odd_method


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with odd_method():
        yield make_store(tmp_path_factory.mktemp("figchoice") / "runs")


def test_methods_pick_and_order_the_curves(store, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from cmr_bench.report import figures

    seen = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: seen.setdefault(out.name, fig) and out)
    figures.plot_pr(store, "synthetic", tmp_path / "pr.png", protocol="real", methods=["random", "cca"])
    fig = seen["pr.png"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Random (n=1)", "CCA (n=2)"]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    plt.close(fig)


def test_highlight_draws_the_top_methods_thick(store, tmp_path, monkeypatch):
    """The paper's Fig. 3 emphasis: the best by mAP solid and thick, the rest thin; the curves
    still differ in colour and marker, and a small figure draws all alike by default."""
    import matplotlib.pyplot as plt
    import numpy as np

    from cmr_bench.report import figures
    from cmr_bench.report.results import collect

    runs = collect(store, "synthetic")
    means = runs.groupby("key")[["i2t:map@all", "t2i:map@all"]].mean().mean(axis=1)
    best = figures.display_name(means.idxmax())
    seen = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: seen.setdefault(out.name, fig) and out)
    figures.plot_pr(store, "synthetic", tmp_path / "hl.png", protocol="real", highlight=1)
    figures.plot_pr(store, "synthetic", tmp_path / "plain.png", protocol="real")
    for ax in seen["hl.png"].axes:
        widths = {line.get_label().split(" (n=")[0]: line.get_linewidth() for line in ax.get_lines()}
        assert max(widths, key=widths.get) == best and sorted(widths.values())[-2] < widths[best]
        pairs = [(tuple(np.round(matplotlib_colour(line), 3)), line.get_marker()) for line in ax.get_lines()]
        assert len(set(pairs)) == len(pairs)
    assert "thick: the top 1 by mAP" in seen["hl.png"].texts[0].get_text()
    assert len({line.get_linewidth() for ax in seen["plain.png"].axes for line in ax.get_lines()}) == 1
    for fig in seen.values():
        plt.close(fig)


def matplotlib_colour(line):
    from matplotlib.colors import to_rgb

    return to_rgb(line.get_color())


def test_highlight_must_be_a_count(store, run_cli, tmp_path):
    code, _, err = run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", store, "--highlight", "-1",
                           "--out", tmp_path / "f.png")
    assert code == 2 and "--highlight -1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["pr", "precision-at-r"])
def test_out_extension_picks_the_format(store, run_cli, tmp_path, kind):
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")):
        out = tmp_path / f"fig{suffix}"
        code, _, err = run_cli("plot", kind, "--dataset", "synthetic", "--results-dir", store, "--protocol", "real",
                               "--methods", "cca,random", "--out", out)
        assert code == 0, err
        assert out.read_bytes().startswith(magic), suffix
    if kind == "pr":
        assert b"<svg" in (tmp_path / "fig.svg").read_bytes()  # vector: paths, not an embedded bitmap
        assert b"<image" not in (tmp_path / "fig.svg").read_bytes()
    assert not list(tmp_path.glob("*.tmp*"))


def test_bad_choices_are_one_line(store, run_cli, tmp_path):
    base = ("plot", "pr", "--dataset", "synthetic", "--results-dir", store)
    for args, words in (((*base, "--out", tmp_path / "fig.jpg"), ".png, .pdf, .svg"),
                        ((*base, "--methods", "cca,randon"), "did you mean random"),
                        ((*base, "--methods", "cca[nope]"), "unknown variant of 'cca'"),
                        ((*base, "--methods", "cca,dscmr"), "no finished runs of dscmr")):
        code, out, err = run_cli(*args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "fig.jpg").exists()


def test_plot_curves_writes_where_the_readme_says(store, run_cli):
    """README: "Your tables and figures go to <results-dir>/_out/<dataset>/"."""
    seed = next(store.glob("synthetic/real/test-odd/*/seed-0"))
    code, out, err = run_cli("plot", "curves", seed, "--results-dir", store)
    assert code == 0, err
    where = store / "_out" / "synthetic"
    assert [p.name for p in where.glob("curves_*.png")] == ["curves_test-odd.png"]
    assert out.strip().splitlines()[-1] == f"output: {where}"


def test_hashing_figures_in_code_length_order_with_captions(tmp_path):
    from cmr_bench.report.page import _figure_list

    for name in ("fig_pr_hash_128bits.png", "fig_pr_hash_16bits.png", "fig_pr_hash_64bits.png", "fig_pr_hash_32bits.png",
                 "fig_pr_real.png", "fig_code_length.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    listed = _figure_list(tmp_path, None, embed=False)  # placeholders: listed as linked files, not embedded
    assert [p.name for p, _ in listed] == ["fig_pr_hash_16bits.png", "fig_pr_hash_32bits.png", "fig_pr_hash_64bits.png",
                                           "fig_pr_hash_128bits.png", "fig_pr_real.png", "fig_code_length.png"]
    captions = dict((p.name, c) for p, c in listed)
    assert captions["fig_pr_hash_64bits.png"].startswith("Fig. 3: precision-recall curves, protocol 'hash', 64-bit codes")
    assert captions["fig_pr_real.png"].startswith("Fig. 3: precision-recall curves, protocol 'real'")
