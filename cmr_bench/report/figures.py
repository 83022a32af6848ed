"""Figures from stored runs (matplotlib, Agg): PR curves (the SDCMR paper's Fig. 3),
precision@top-R curves (DJSRH Fig. 1 style) and mAP against code length."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from cmr_bench.errors import CmrBenchError
from cmr_bench.report.results import method_key
from cmr_bench.runner.store import STATUS_DONE, iter_runs

DIRECTION_TITLES = {"i2t": "Img2Txt", "t2i": "Txt2Img"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finished(runs_dir: Path, dataset: str, protocol: str | None, bits: int | None, with_variants: bool = False):
    for folder, run, metrics in iter_runs(runs_dir, dataset):
        spec = run.get("spec", {})
        if run.get("status") != STATUS_DONE or not metrics or spec.get("overrides"):
            continue
        if protocol and spec.get("protocol") != protocol:
            continue
        if bits is not None and spec.get("bits") not in (None, bits):
            continue
        if spec.get("variant") and not with_variants:
            continue
        yield spec, metrics


def _style(i: int):
    styles = ["-", "--", "-.", ":"]
    return styles[(i // 10) % len(styles)]


def plot_pr(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, bits: int | None = None) -> Path:
    curves = defaultdict(lambda: defaultdict(list))
    for spec, metrics in _finished(runs_dir, dataset, protocol, bits):
        label = method_key(spec["method"], spec.get("variant", "")) + (f" {spec['bits']}b" if spec.get("bits") else "")
        for d in DIRECTION_TITLES:
            pr = metrics[d].get("pr_curve")
            if pr:
                curves[label][d].append((np.asarray(pr["recall"], float), np.asarray(pr["precision"], float)))
    if not curves:
        raise CmrBenchError(f"no finished runs with PR curves for dataset '{dataset}' in {runs_dir}")
    def draw(ax, i, label, runs):
        recall = np.mean([c[0] for c in runs], axis=0)
        precision = np.mean([c[1] for c in runs], axis=0)
        ax.plot(recall, precision, _style(i), marker=".", markersize=3, label=f"{label} (n={len(runs)})")

    return _two_panels(curves, draw, dataset, out, xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1))


def plot_precision_at_r(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, bits: int | None = None) -> Path:
    curves = defaultdict(lambda: defaultdict(list))
    for spec, metrics in _finished(runs_dir, dataset, protocol, bits):
        label = spec["method"] + (f" {spec['bits']}b" if spec.get("bits") else "")
        for d in DIRECTION_TITLES:
            ps = sorted((int(k[2:]), v) for k, v in metrics[d].items() if k.startswith("p@") and isinstance(v, (int, float)))
            if ps:
                curves[label][d].append(ps)
    if not curves:
        raise CmrBenchError(f"no finished runs with precision@R for dataset '{dataset}' in {runs_dir}")
    def draw(ax, i, label, runs):
        rs = [r for r, _ in runs[0]]
        ax.plot(rs, np.mean([[v for _, v in run] for run in runs], axis=0), _style(i), marker="o", markersize=3, label=label)

    return _two_panels(curves, draw, dataset, out, xlabel="Number of top returned items R", ylabel="Precision@R", ylim=(0, 1))


def _two_panels(curves, draw, dataset: str, out: Path, **axis) -> Path:
    """Img2Txt and Txt2Img side by side; `curves[label][direction]` holds one entry per run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (d, title) in zip(axes, DIRECTION_TITLES.items()):
        for i, (label, per_dir) in enumerate(sorted(curves.items())):
            if per_dir[d]:
                draw(ax, i, label, per_dir[d])
        ax.set(title=f"{title} — {dataset}", **axis)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    return _save(fig, out)


def plot_code_length(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, metric: str = "map@all") -> Path:
    points = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for spec, metrics in _finished(runs_dir, dataset, protocol, None):
        if not spec.get("bits"):
            continue
        for d in DIRECTION_TITLES:
            points[spec["method"]][d][spec["bits"]].append(metrics[d][metric])
    if not points:
        raise CmrBenchError(f"no finished binary-code runs for dataset '{dataset}' in {runs_dir}")
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (d, title) in zip(axes, DIRECTION_TITLES.items()):
        for i, (method, per_dir) in enumerate(sorted(points.items())):
            bits = sorted(per_dir[d])
            means = [np.mean(per_dir[d][b]) for b in bits]
            stds = [np.std(per_dir[d][b]) for b in bits]
            ax.errorbar(bits, means, yerr=stds, fmt=_style(i), marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set(title=f"{title} — {dataset}", xlabel="Code length (bits)", ylabel=metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130)
    tmp.replace(out)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out
