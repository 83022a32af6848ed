"""Figures from stored runs (matplotlib, Agg): PR curves (the SDCMR paper's Fig. 3),
precision@top-R curves (DJSRH Fig. 1 style) and mAP against code length."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from cmr_bench.errors import CmrBenchError
from cmr_bench.registry import display_name
from cmr_bench.report.results import method_key, source_text, stored_runs
from cmr_bench.runner.spec import RUN_SELECTIONS
from cmr_bench.runner.store import STATUS_DONE

DIRECTION_TITLES = {"i2t": "Img2Txt", "t2i": "Txt2Img"}
# Points at 130 dpi; a 10-inch figure shrunk to one printed column still reads at these sizes.
LABEL_FONT, TICK_FONT, LEGEND_FONT = 12, 10, 9
# --out's extension picks the format; PDF, SVG and EPS are vector files.
FORMATS = (".png", ".pdf", ".svg", ".eps")


def check_format(out: Path) -> None:
    if Path(out).suffix.lower() not in FORMATS:
        raise CmrBenchError(f"--out {out}: the extension picks the format; use one of {', '.join(FORMATS)}")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finished(runs_dir: Path, dataset: str, protocol: str | None, bits: int | None, with_variants: bool = False,
              reference: Path | None = None):
    for folder, run, metrics in stored_runs(runs_dir, dataset, reference=reference)[0]:  # reference: see report/results.py
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


def _style(i: int) -> dict:
    """Colour, line style and marker of the i-th curve: ten strong colours in turn; the marker
    shifts by one every ten curves, so no two of the first 100 curves share colour and marker.
    Printed in grey the colours merge: (line style, marker) alone tells the first 29 apart, and
    the first four curves differ in dash; (colour, line style) is unique over 40."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors[0::2]  # the ten strong colours (their light partners fade in print)
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    block, k = divmod(i, 10)
    return {"color": colours[k], "linestyle": styles[(k + (0, 2, 1, 3)[block % 4]) % 4], "marker": markers[(k + block) % 10]}


def _wanted(spec: dict, methods: list[str] | None) -> bool:
    """`--methods`: a plugin name (its variants' runs too only when named as name[variant])."""
    return methods is None or method_key(spec["method"], spec.get("variant", "")) in methods


def _groups(runs_dir: Path, dataset: str, protocol: str | None, bits: int | None, config: str = "all",
            methods: list[str] | None = None, reference: Path | None = None):
    """{(protocol, bits or None): [(spec, metrics), ...]}: one figure per protocol and code length."""
    if config not in RUN_SELECTIONS:  # tuned runs get curves of their own
        raise CmrBenchError(f"unknown figure config '{config}' (choose from: {', '.join(RUN_SELECTIONS)})")
    groups = defaultdict(list)
    for spec, metrics in _finished(runs_dir, dataset, protocol, bits, with_variants=bool(methods), reference=reference):
        if config != "all" and spec.get("config_source", "default") != config:
            continue
        if not _wanted(spec, methods):
            continue
        groups[(spec.get("protocol", "?"), spec.get("bits"))].append((spec, metrics))
    missing = [m for m in methods or [] if not any(method_key(sp["method"], sp.get("variant", "")) == m
                                                   for runs in groups.values() for sp, _ in runs)]
    if missing:  # asked for by name: its absence is news, not a quietly shorter legend
        raise CmrBenchError(f"--methods: no finished runs of {', '.join(missing)} for dataset '{dataset}' in {runs_dir}"
                            + (f" under protocol '{protocol}'" if protocol else "") + (f" at {bits} bits" if bits else ""))
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)))


def group_path(out: Path, protocol: str, bits: int | None, several: bool) -> Path:
    """`out` itself for a single figure; else `out` with the protocol and code length added."""
    if not several:
        return out
    return out.with_name(f"{out.stem}_{protocol}" + (f"_{bits}bits" if bits else "") + out.suffix)


def _title(dataset: str, protocol: str, bits: int | None) -> str:
    return f"{dataset}, protocol '{protocol}'" + (f", {bits}-bit codes" if bits else "")


def curve_label(spec: dict) -> str:
    """A run's legend label: its method (and variant) by the paper's name; tuned runs get their own."""
    return display_name(method_key(spec.get("method", "?"), spec.get("variant", "")) + source_text(spec))


def _curves(runs, extract, methods: list[str] | None = None) -> dict:
    """`curves[method label][direction]` = one `extract(direction metrics)` per run that has it,
    in legend order: --methods' order when given, else by plugin name."""
    curves, rank = defaultdict(lambda: defaultdict(list)), {}
    for spec, metrics in runs:
        key = method_key(spec["method"], spec.get("variant", ""))
        label = curve_label(spec)
        rank[label] = (methods.index(key) if methods else 0, key + source_text(spec))  # by plugin name: β-VAE with beta-vae
        for d in DIRECTION_TITLES:
            value = extract(metrics[d])
            if value:
                curves[label][d].append(value)
    return {label: curves[label] for label in sorted(curves, key=rank.__getitem__)}


def _pr_points(m: dict):
    pr = m.get("pr_curve")
    return (np.asarray(pr["recall"], float), np.asarray(pr["precision"], float)) if pr else None


def _precision_at_r(m: dict):
    return sorted((int(k[2:]), v) for k, v in m.items() if k.startswith("p@") and isinstance(v, (int, float)))


HIGHLIGHT = 3  # the paper's Fig. 3 draws its top three methods solid


def top_labels(runs, k: int) -> set[str]:
    """The `k` curves with the highest mAP (mean of both directions, over seeds): the ones a
    figure draws solid and thick, the others thin, as the paper's Fig. 3 does (0: none)."""
    scores = defaultdict(list)
    for spec, metrics in runs:
        values = [metrics[d].get("map@all") for d in DIRECTION_TITLES]
        if all(isinstance(v, (int, float)) for v in values):
            scores[curve_label(spec)].append(sum(values) / 2)
    ranked = sorted(scores, key=lambda label: (-float(np.mean(scores[label])), label))
    return set(ranked[:max(0, k)])


def plot_pr(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, bits: int | None = None,
            config: str = "all", methods: list[str] | None = None, reference: Path | None = None,
            highlight: int | None = None) -> list[Path]:
    """One figure per (protocol, code length): PR curves of both directions, mean over seeds.
    `config`: all runs, or only the default / tuned ones; `methods`: only these, in this order;
    `highlight`: the top-k methods by mAP drawn solid and thick, the rest thin (default: top 3
    when more than 8 curves share a panel, else none)."""
    groups = _groups(runs_dir, dataset, protocol, bits, config, methods, reference)
    if not groups:
        raise CmrBenchError(f"no finished runs with PR curves for dataset '{dataset}' in {runs_dir}")
    written = []
    for (proto, b), runs in groups.items():
        curves = _curves(runs, _pr_points, methods)
        if not curves:
            continue
        k = highlight if highlight is not None else (HIGHLIGHT if len(curves) > 8 else 0)
        top = top_labels(runs, k)

        def draw(ax, i, label, runs, top=top):
            recall = np.mean([c[0] for c in runs], axis=0)
            precision = np.mean([c[1] for c in runs], axis=0)
            style = _style(i)
            if top and label in top:  # on top, solid, thick: the paper's emphasis
                style.update(linestyle="-", linewidth=2.6, markersize=6, zorder=3)
            elif top:
                style.update(linewidth=1.0, markersize=3.5, alpha=0.6, zorder=2)
            else:
                style.update(linewidth=1.6, markersize=5)
            ax.plot(recall, precision, markevery=max(1, len(recall) // 10),
                    label=f"{label} (n={len(runs)})", **style)

        title = _title(dataset, proto, b) + (f"; thick: the top {len(top)} by mAP" if top else "")
        written.append(_two_panels(curves, draw, title, group_path(out, proto, b, len(groups) > 1),
                                   xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1)))
    if not written:
        raise CmrBenchError(f"no finished runs with PR curves for dataset '{dataset}' in {runs_dir}")
    return written


def plot_precision_at_r(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, bits: int | None = None,
                        config: str = "all", methods: list[str] | None = None, reference: Path | None = None) -> list[Path]:
    groups = _groups(runs_dir, dataset, protocol, bits, config, methods, reference)
    written = []
    for (proto, b), runs in groups.items():
        curves = _curves(runs, _precision_at_r, methods)
        if not curves:
            continue

        def draw(ax, i, label, runs):
            rs = [r for r, _ in runs[0]]
            ax.plot(rs, np.mean([[v for _, v in run] for run in runs], axis=0), markersize=3, label=f"{label} (n={len(runs)})", **_style(i))

        written.append(_two_panels(curves, draw, _title(dataset, proto, b), group_path(out, proto, b, len(groups) > 1),
                                   xlabel="Number of top returned items R", ylabel="Precision@R", ylim=(0, 1)))
    if not written:
        raise CmrBenchError(f"no finished runs with precision@R for dataset '{dataset}' in {runs_dir}")
    return written


def _legend_outside(fig, axes) -> None:
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=LEGEND_FONT, frameon=False,
                   handlelength=3.5, ncol=1 if len(handles) <= 18 else 2)  # handles long enough to show the dash pattern


def _two_panels(curves, draw, title: str, out: Path, **axis) -> Path:
    """Img2Txt and Txt2Img side by side, one legend right of both; `curves[label][direction]`
    holds one entry per run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (d, panel) in zip(axes, DIRECTION_TITLES.items()):
        for i, (label, per_dir) in enumerate(curves.items()):
            if per_dir[d]:
                draw(ax, i, label, per_dir[d])
        ax.set(**axis)
        ax.set_title(panel, fontsize=LABEL_FONT)
        ax.xaxis.label.set_size(LABEL_FONT)
        ax.yaxis.label.set_size(LABEL_FONT)
        ax.tick_params(labelsize=TICK_FONT)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=LABEL_FONT)
    _legend_outside(fig, axes)
    return _save(fig, out)


def plot_code_length(runs_dir: Path, dataset: str, out: Path, protocol: str | None = None, metric: str = "map@all",
                     methods: list[str] | None = None, reference: Path | None = None) -> Path:
    points = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for spec, metrics in _finished(runs_dir, dataset, protocol, None, reference=reference):
        if not spec.get("bits") or not _wanted(spec, methods):
            continue
        for d in DIRECTION_TITLES:
            points[spec["method"]][d][spec["bits"]].append(metrics[d][metric])
    if not points:
        raise CmrBenchError(f"no finished binary-code runs for dataset '{dataset}' in {runs_dir}")
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (d, title) in zip(axes, DIRECTION_TITLES.items()):
        ordered = sorted(points.items(), key=lambda kv: (methods.index(kv[0]) if methods and kv[0] in methods else 0, kv[0]))
        for i, (method, per_dir) in enumerate(ordered):
            bits = sorted(per_dir[d])
            means = [np.mean(per_dir[d][b]) for b in bits]
            stds = [np.std(per_dir[d][b]) for b in bits]
            ax.errorbar(bits, means, yerr=stds, capsize=3, label=display_name(method), **_style(i))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({b for per_dir in points.values() for b in per_dir[d]}))
        from matplotlib.ticker import ScalarFormatter

        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.set(title=title, xlabel="Code length (bits)", ylabel=metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset}, protocol '{protocol or 'hash'}': {metric} by code length")
    _legend_outside(fig, axes)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    """In the format of `out`'s extension (PNG at 130 dpi; PDF, SVG, EPS as vector files)."""
    check_format(out)
    import matplotlib.pyplot as plt

    from cmr_bench.safe_io import atomic_file, make_folder

    try:
        make_folder(out.parent, "figure folder")
        fig.tight_layout()
        with atomic_file(out, "figure") as fh:  # the legend outside the axes stays in the file
            fmt = out.suffix[1:].lower()
            fig.savefig(fh, format=fmt, dpi=130, bbox_inches="tight", metadata={"Software": FIGURE_MARK} if fmt == "png" else None)
    finally:
        plt.close(fig)
    return out


# report.html embeds only PNGs carrying this mark (figures the suite wrote itself)
FIGURE_MARK = "cmr-bench figure"


# --- training curves from log.jsonl -------------------------------------------------------

X_KEYS = ("epoch", "iteration", "step")
NOT_TERMS = set(X_KEYS) | {"val_map_i2t", "val_map_t2i", "selected_epoch", "refit_epochs", "refit_items"}


def read_logs(folders: list[Path]) -> list[dict]:
    """[{label, folder, x, rows, selected}] for each run folder (a config folder stands for its
    seed-k folders); one-line errors for folders that are not runs."""
    import json

    from cmr_bench.runner.store import SEED_DIR, validate_run

    seeds: list[Path] = []
    for folder in folders:
        if folder.is_dir() and not (folder / "run.json").is_file():
            found = sorted(p for p in folder.iterdir() if p.is_dir() and SEED_DIR.match(p.name) and (p / "run.json").is_file())
            if not found:
                raise CmrBenchError(f"{folder} is not a run folder (no run.json in it or in seed-* folders below it)")
            seeds += found
        else:
            seeds.append(folder)
    runs = []
    for folder in seeds:
        state = validate_run(folder)
        if state.status is None:
            raise CmrBenchError(f"{folder}: no such run folder")
        if state.status not in (STATUS_DONE, "failed"):
            raise CmrBenchError(f"{folder}: not a readable run ({state.problem})")
        rows = []
        try:
            for line in (folder / "log.jsonl").read_text().splitlines():
                row = json.loads(line) if line.strip() else None
                if isinstance(row, dict):
                    rows.append(row)
        except (OSError, ValueError) as exc:
            raise CmrBenchError(f"{folder}/log.jsonl is unreadable ({type(exc).__name__})") from None
        spec = state.run.get("spec", {})
        x = next((k for k in X_KEYS if rows and all(k in r for r in rows)), None)
        label = curve_label(spec)
        label += f" {spec['bits']}b" if spec.get("bits") else ""
        label += f" seed={spec.get('seed', '?')}"
        selected = next((r["selected_epoch"] for r in reversed(rows) if isinstance(r.get("selected_epoch"), (int, float))), None)
        runs.append({"label": label, "folder": folder, "x": x, "rows": rows, "selected": selected, "dataset": str(spec.get("dataset", "unknown"))})
    return runs


def runs_slug(runs: list[dict]) -> str:
    import re

    text = "_".join(dict.fromkeys(r["label"].split(" seed=")[0] for r in runs))
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")[:60] or "runs"


def _terms(rows: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if k not in NOT_TERMS and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def plot_curves(runs: list[dict], out: Path, term: str | None = None) -> Path:
    """Left: training loss per epoch (every term for one run; `term` for several runs);
    right: validation mAP per epoch, both directions, with the selected epoch marked."""
    if not any(r["rows"] and r["x"] for r in runs):
        raise CmrBenchError("no training log in these runs (log.jsonl has no epoch/iteration rows: a closed-form method?)")
    if term is not None and not any(term in _terms(r["rows"]) for r in runs):
        known = sorted({t for r in runs for t in _terms(r["rows"])})
        raise CmrBenchError(f"--term {term}: not in these logs (has: {', '.join(known) or 'nothing'})")
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    has_val = False
    i = 0
    for run in runs:
        if not run["rows"] or not run["x"]:
            continue
        terms = _terms(run["rows"])
        if len(runs) > 1 or term:
            terms = [term] if term else (["loss"] if "loss" in terms else terms[:1])
        for t in terms:
            pts = [(r[run["x"]], r[t]) for r in run["rows"] if isinstance(r.get(t), (int, float))]
            if pts:
                name = t if len(runs) == 1 else f"{run['label']}: {t}"
                left.plot(*zip(*pts), label=name, **{**_style(i), "marker": None})
                i += 1
        for d, dash in (("val_map_i2t", "-"), ("val_map_t2i", "--")):
            pts = [(r[run["x"]], r[d]) for r in run["rows"] if isinstance(r.get(d), (int, float))]
            if pts:
                has_val = True
                colour = _style(runs.index(run))["color"]
                right.plot(*zip(*pts), dash, color=colour, label=f"{run['label']} {DIRECTION_TITLES[d[-3:]]}")
        if run["selected"] is not None and has_val:
            right.axvline(run["selected"], color=_style(runs.index(run))["color"], alpha=0.4, linestyle=":")
    x_name = next((r["x"] for r in runs if r["x"]), "epoch")
    left.set(title="Training loss", xlabel=x_name, ylabel="loss (epoch mean)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, frameon=False)
    if has_val:
        right.set(title="Validation mAP (dotted: selected epoch)", xlabel=x_name, ylabel="mAP@all")
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=1, frameon=False)
    else:
        right.text(0.5, 0.5, "no validation mAP in these logs\n(the method does not select on validation)",
                   ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    right.grid(alpha=0.3)
    fig.suptitle("Training curves: " + ", ".join(dict.fromkeys(r["label"] for r in runs))[:120])
    return _save(fig, out)


def write_tensorboard(runs: list[dict], logdir: Path) -> list[Path]:
    """Each run's log as TensorBoard scalars (torch.utils.tensorboard; the optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CmrBenchError('--tensorboard needs TensorBoard: pip install "cmr-bench[tensorboard]"') from None
    import re

    written = []
    for run in runs:
        if not run["rows"] or not run["x"]:
            continue
        where = logdir / re.sub(r"[^A-Za-z0-9.+=-]+", "_", run["label"]).strip("_")
        writer = SummaryWriter(log_dir=str(where))
        try:
            for row in run["rows"]:
                for k, v in row.items():
                    if k != run["x"] and isinstance(v, (int, float)) and not isinstance(v, bool):
                        writer.add_scalar(("val/" if k.startswith("val_") else "train/") + k, float(v), int(row[run["x"]]))
        finally:
            writer.close()
        written.append(where)
    return written
