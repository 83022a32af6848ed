"""The paper's figures as the report shows them: Fig. 3 readable in print, Fig. 6 (t-SNE)."""

from __future__ import annotations

import numpy as np
import pytest

from report_store import make_store, odd_method


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with odd_method():  # registered for the module: the tables read its metadata
        yield make_store(tmp_path_factory.mktemp("figs") / "runs")


def test_curve_styles_differ_in_grayscale():
    """Printed in grey the colours merge: line style and marker alone must tell curves apart;
    in colour, no two curves of a panel share colour and marker (issue 27: acmr/scm, cca/tanss
    differed only by dash pattern)."""
    from cmr_bench.report.figures import _style

    styles = [_style(i) for i in range(100)]
    assert len({(s["color"], s["marker"]) for s in styles}) == 100
    assert len({(s["linestyle"], s["marker"]) for s in styles[:29]}) == 29
    assert len({(s["color"], s["linestyle"]) for s in styles[:40]}) == 40
    assert len({s["linestyle"] for s in styles[:4]}) == 4  # the first few curves already differ in dash


def test_pr_figure_reads_in_print(store, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from cmr_bench.report import figures

    seen = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: seen.setdefault(out.name, fig) and out)
    figures.plot_pr(store, "synthetic", tmp_path / "pr.png", protocol="real")
    fig = seen["pr.png"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "Recall" and ax.get_ylabel() == "Precision"
        assert ax.xaxis.label.get_size() >= 11 and ax.yaxis.label.get_size() >= 11
        assert all(t.get_size() >= 9 for t in ax.get_xticklabels() + ax.get_yticklabels())
        lines = ax.get_lines()
        assert len(lines) == 3 and len({ln.get_linestyle() for ln in lines}) == 3  # not just colour
        assert all(ln.get_marker() not in (None, "None", "") and ln.get_markersize() >= 4 for ln in lines)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["CCA (n=2)", "Random (n=1)", "test-odd (n=1)"]  # display names
    assert all(t.get_size() >= 9 for t in legend.get_texts()) and legend.handlelength >= 3
    plt.close(fig)


def test_tsne_figure_of_a_stored_run(store, tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason='scikit-learn is not installed (pip install "cmr-bench[figures]")')
    import matplotlib.pyplot as plt

    from cmr_bench.report import figures, tsne

    d = tsne.tsne_data(store, "synthetic", "cca")
    assert d["split"] == "test" and len(d["labels"]) == len(d["image"]) == len(d["codes_text"]) == 200
    with np.load(d["folder"] / "arrays.npz") as arrays:  # the run's own codes, the run's own items
        assert np.array_equal(d["codes_image"], arrays["codes_query_image"])
    a, b = tsne.embed(d["codes_image"], seed=0), tsne.embed(d["codes_image"], seed=0)
    assert a.shape == (200, 2) and np.allclose(a, b)  # seeded
    seen = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out: seen.setdefault(out.name, fig) and out)
    tsne.plot_tsne(store, "synthetic", tmp_path / "t.png", method="cca")
    fig = seen["t.png"]
    points = [sum(len(c.get_offsets()) for c in ax.collections) for ax in fig.axes]
    assert points == [200, 200, 400]  # image features, text features, both modalities' codes
    colours = {tuple(np.round(c.get_facecolor()[0], 3)) for c in fig.axes[0].collections}
    assert len(colours) == 5  # one colour per class
    paths = {len(c.get_paths()[0].vertices) for c in fig.axes[2].collections}
    assert len(paths) == 2  # images and texts drawn with different markers
    assert "cca" in fig.axes[2].get_title() and "seed 0" in fig._suptitle.get_text()
    plt.close(fig)


def test_tsne_command_errors_are_one_line(store, run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("plot", "tsne", "--dataset", "synthetic", "--results-dir", store, "--method", "dscmr",
                             "--out", tmp_path / "t.png")
    if "scikit-learn" in err:  # not installed: the first thing said, in one line
        assert code == 2 and len(err.strip().splitlines()) == 1 and 'pip install "cmr-bench[figures]"' in err
        return
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no finished run of 'dscmr'" in err
    monkeypatch.setitem(__import__("sys").modules, "sklearn.manifold", None)  # as if not installed
    code, out, err = run_cli("plot", "tsne", "--dataset", "synthetic", "--results-dir", store, "--method", "cca",
                             "--out", tmp_path / "t.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'pip install "cmr-bench[figures]"' in err
    assert not (tmp_path / "t.png").exists()


def test_tsne_command_writes_the_figure(store, run_cli, tmp_path):
    pytest.importorskip("sklearn", reason='scikit-learn is not installed (pip install "cmr-bench[figures]")')
    code, out, err = run_cli("plot", "tsne", "--dataset", "synthetic", "--results-dir", store, "--method", "cca")
    assert code == 0, err
    png = store / "_out" / "synthetic" / "fig_tsne.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"wrote {png}" in out


def test_tsne_refuses_data_other_than_the_runs(store, monkeypatch):
    """Features from changed files would be drawn beside codes of other items: refused, one line."""
    from cmr_bench.data import loader
    from cmr_bench.data.synthetic import make_synthetic
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.report import tsne

    other = make_synthetic(name="synthetic", n_train=400, n_test=200, num_classes=5, image_dim=32, text_dim=16, seed=1)
    monkeypatch.setattr(loader, "load_dataset", lambda *a, **k: other)
    with pytest.raises(CmrBenchError, match="not the data run .* was made on"):
        tsne.tsne_data(store, "synthetic", "cca")
