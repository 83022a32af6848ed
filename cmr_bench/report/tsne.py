"""Fig. 6 of the SDCMR paper: t-SNE of the initial features and of a method's learned common
representations on the test split, coloured by class, images and texts with different markers.

The codes come from a stored run (arrays.npz); the features and labels from the data layer, checked
against the run's recorded data fingerprint and split indices, so the points are the run's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmr_bench.errors import CmrBenchError

TSNE_SEED = 0
INSTALL = 'the t-SNE figure needs scikit-learn: pip install "cmr-bench[figures]"'


def _sklearn_tsne():
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise CmrBenchError(INSTALL) from None
    return TSNE


def _unit_rows(x: np.ndarray) -> np.ndarray:
    # Euclidean distance between unit rows orders neighbours like the cosine the evaluator ranks by.
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def embed(x: np.ndarray, seed: int = TSNE_SEED) -> np.ndarray:
    """2-d t-SNE of the rows of x (cosine geometry), seeded."""
    TSNE = _sklearn_tsne()
    n = len(x)
    if n < 5:
        raise CmrBenchError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3))  # sklearn requires perplexity < n
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return model.fit_transform(_unit_rows(x))


def find_run(runs_dir: Path, dataset: str, method: str) -> tuple[Path, dict]:
    """The finished run of `method` (a name, or name[variant]) at its latest configuration, lowest
    seed, on the real protocol."""
    from cmr_bench.report.results import collect
    from cmr_bench.runner.store import validate_run

    runs = collect(Path(runs_dir), dataset, protocol="real")
    mine = runs[(runs["key"] == method) & (runs["status"] == "done")] if not runs.empty else runs
    if mine.empty:
        known = sorted(set(runs["key"])) if not runs.empty else []
        raise CmrBenchError(f"no finished run of '{method}' on dataset '{dataset}' (protocol 'real') in {runs_dir}"
                            + (f"; runs of: {', '.join(known)}" if known else ""))
    row = mine.sort_values("seed").iloc[0]
    folder = Path(row["folder"])
    run = validate_run(folder).run
    from cmr_bench.registry import all_methods

    plugin = all_methods().get(run["spec"].get("method"))
    code_type = (run.get("method_info") or {}).get("code_type") or (plugin.code_type if plugin else "real")
    if code_type != "real":
        raise CmrBenchError(f"'{method}' learns binary codes; the t-SNE figure shows real-valued common representations")
    return folder, run


def tsne_data(runs_dir: Path, dataset: str, method: str = "sdcmr", root: Path | None = None) -> dict:
    """Features, codes and labels of the run's test queries, checked to be the run's own items."""
    from cmr_bench.data.loader import load_dataset

    folder, run = find_run(runs_dir, dataset, method)
    spec = run["spec"]
    ds = load_dataset(dataset, root)
    if spec.get("data") and ds.fingerprint != spec["data"]:
        raise CmrBenchError(f"the dataset '{dataset}' under the data root is not the data run {folder} was made on "
                            f"(fingerprint {ds.fingerprint}, the run's {spec['data']})")
    proto = ds.protocol(spec.get("protocol", "real"))
    split = ds.split(proto.query)
    try:
        with np.load(folder / "arrays.npz") as arrays:
            ids = np.asarray(arrays["split_query_indices"])
            codes = {m: np.asarray(arrays[f"codes_query_{m}"], dtype=np.float64) for m in ("image", "text")}
    except (OSError, KeyError, ValueError) as exc:
        raise CmrBenchError(f"run {folder}: no query codes in arrays.npz ({type(exc).__name__})") from None
    if not np.array_equal(ids, split.indices) or any(len(c) != len(ids) for c in codes.values()):
        raise CmrBenchError(f"run {folder}: its query items are not the '{proto.query}' split of '{dataset}' here")
    labels = split.labels if split.labels.ndim == 1 else np.argmax(split.labels, axis=1)  # multi-label: first class
    names = list(ds.class_names) or [f"class {c}" for c in range(ds.num_classes)]
    return {"folder": folder, "run": run, "split": proto.query, "image": split.image, "text": split.text,
            "codes_image": codes["image"], "codes_text": codes["text"], "labels": np.asarray(labels, dtype=np.int64),
            "class_names": names, "multilabel": split.labels.ndim == 2}


def plot_tsne(runs_dir: Path, dataset: str, out: Path, method: str = "sdcmr", root: Path | None = None,
              seed: int = TSNE_SEED) -> Path:
    """Three panels: initial image features, initial text features (each its own embedding: their
    dimensions differ), and the learned image and text codes embedded together."""
    _sklearn_tsne()  # before loading anything
    d = tsne_data(runs_dir, dataset, method, root)
    n = len(d["labels"])
    joint = embed(np.vstack([d["codes_image"], d["codes_text"]]), seed)  # one embedding: distances across modalities mean something
    panels = [("Initial image features", [(embed(d["image"], seed), "image")]),
              ("Initial text features", [(embed(d["text"], seed), "text")]),
              (f"Common representations ({method})", [(joint[:n], "image"), (joint[n:], "text")])]
    from cmr_bench.report.figures import _plt, _save

    plt = _plt()
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(d["class_names"]) <= 10 else "tab20"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for ax, (title, layers) in zip(axes, panels):
        for c, name in enumerate(d["class_names"]):
            sel = d["labels"] == c
            if not sel.any():
                continue
            colour = cmap(c % cmap.N)
            for points, modality in layers:  # images: filled circles; texts: hollow triangles
                if modality == "image":
                    ax.scatter(points[sel, 0], points[sel, 1], s=12, marker="o", color=colour, alpha=0.8, linewidths=0)
                else:
                    ax.scatter(points[sel, 0], points[sel, 1], s=16, marker="^", facecolors="none", edgecolors=colour,
                               linewidths=0.8, alpha=0.9)
        ax.set_title(title, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.lines import Line2D

    classes = [Line2D([], [], marker="s", linestyle="", color=cmap(c % cmap.N), label=name)
               for c, name in enumerate(d["class_names"]) if (d["labels"] == c).any()]
    kinds = [Line2D([], [], marker="o", linestyle="", color="0.3", label="image"),
             Line2D([], [], marker="^", linestyle="", markerfacecolor="none", color="0.3", label="text")]
    fig.legend(handles=classes + kinds, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10, frameon=False,
               title="class" + (" (first label)" if d["multilabel"] else ""))
    spec = d["run"]["spec"]
    from cmr_bench.registry import display_name

    fig.suptitle(f"t-SNE on the {d['split']} split of {dataset} ({n} pairs): {display_name(method)}, run seed {spec.get('seed')}, "
                 f"t-SNE seed {seed}, cosine geometry", fontsize=12)
    return _save(fig, Path(out))
