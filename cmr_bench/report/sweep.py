"""Parameter sensitivity from stored runs (the SDCMR paper's Fig. 5): one panel per swept
hyperparameter, the average mAP (mean of Img2Txt and Txt2Img) against its value on a log
axis, mean ± sample std over seeds as a band. The runs are those of an experiment's sweep
(`--set` runs, plus the default runs for a value equal to the default)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cmr_bench.errors import CmrBenchError
from cmr_bench.runner.store import STATUS_DONE, iter_runs

SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "eta": "η", "lambda": "λ", "mu": "μ"}


def _plain(value):
    # stored configs went through JSON (tuples became lists): compare in that form
    return json.loads(json.dumps(value, default=str))


def sweep_points(runs_dir: Path, dataset: str, method: str, parameters, values=None, seeds=None, variant: str = "",
                 protocol: str | None = None, bits: int | None = None, metric: str = "map@all") -> dict[str, list[dict]]:
    """{parameter: [{"value", "mean", "std", "n", "seeds"}, ...] by value}. A run counts for a
    parameter when it sets nothing but that parameter and the rest of its config is the
    method's current default (with the variant): runs of other --set keys or of older
    defaults stay out. One run per (value, seed)."""
    from cmr_bench.registry import get_method
    from cmr_bench.report.summary import mean_std

    cls = get_method(method)
    base = _plain(cls.resolve_config(dict(cls.variants.get(variant, {})), dataset=dataset)) if variant in cls.variants or not variant else None
    if base is None:
        raise CmrBenchError(f"method '{method}' has no variant '{variant}'")
    wanted = None if values is None else [float(v) for v in values]
    seeds = None if seeds is None else {int(s) for s in seeds}
    found: dict[str, dict[float, dict[int, float]]] = {p: {} for p in parameters}
    for _folder, run, metrics in iter_runs(Path(runs_dir), dataset):
        spec = run.get("spec", {})
        if run.get("status") != STATUS_DONE or not metrics or spec.get("method") != method or spec.get("variant", "") != variant:
            continue
        if (protocol and spec.get("protocol") != protocol) or (bits is not None and spec.get("bits") != bits):
            continue
        if seeds is not None and spec.get("seed") not in seeds:
            continue
        if spec.get("config_source", "default") != "default":  # tuned runs are not around the defaults
            continue
        config, overrides = spec.get("config") or {}, set(spec.get("overrides") or {})
        avg = (metrics["i2t"][metric] + metrics["t2i"][metric]) / 2
        for p in parameters:
            x = config.get(p)
            if not overrides <= {p} or isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if any(_plain(config.get(k)) != v for k, v in base.items() if k != p):
                continue
            match = next((v for v in wanted if math.isclose(x, v, rel_tol=1e-9, abs_tol=0.0)), None) if wanted is not None else float(x)
            if match is None:
                continue
            found[p].setdefault(match, {})[int(spec["seed"])] = avg
    out = {}
    for p in parameters:
        rows = []
        for value in sorted(found[p]):
            per_seed = found[p][value]
            mean, std, n = mean_std(list(per_seed.values()))
            rows.append({"value": value, "mean": mean, "std": std, "n": n, "seeds": sorted(per_seed)})
        out[p] = rows
    return out


def plot_sweep(runs_dir: Path, dataset: str, out: Path, method: str, parameters, values=None, seeds=None,
               variant: str = "", protocol: str | None = None, bits: int | None = None, metric: str = "map@all",
               title: str | None = None) -> Path:
    """One panel per parameter; the dotted line marks the method's default value."""
    from cmr_bench.registry import get_method
    from cmr_bench.report.figures import _plt, _save, _style

    points = sweep_points(runs_dir, dataset, method, parameters, values, seeds, variant, protocol, bits, metric)
    if not any(points.values()):
        raise CmrBenchError(f"no finished runs of the {method} sweep over {', '.join(parameters)} for dataset '{dataset}' "
                            f"in {runs_dir}")
    cls = get_method(method)
    defaults = cls.resolve_config(dict(cls.variants.get(variant, {})), dataset=dataset)
    plt = _plt()
    n = len(parameters)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 0.4, 3.6), sharey=True, squeeze=False)
    colour = _style(0)["color"]
    for ax, p in zip(axes[0], parameters):
        rows = points[p]
        xs = np.array([r["value"] for r in rows], float)
        if len(rows):
            mean = np.array([r["mean"] for r in rows])
            std = np.array([r["std"] for r in rows])
            ax.plot(xs, mean, marker="o", color=colour, linewidth=1.6, label="mean over seeds")
            ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.25, linewidth=0, label="± std")
        # the declared range, even where runs are still missing
        every = xs.tolist() + [float(defaults[p])] + ([float(v) for v in values] if values is not None else [])
        if min(every, default=1.0) > 0:
            ax.set_xscale("log")
            ax.set_xlim(min(every) / 2, max(every) * 2)
        else:  # a zero weight (an ablation) cannot sit on a log axis
            ax.set_xscale("symlog", linthresh=min([abs(v) for v in every if v] or [1.0]))
        ax.axvline(float(defaults[p]), color="0.4", linestyle=":", linewidth=1.2, label="default value")
        counts = sorted({r["n"] for r in rows})
        runs = f"n = {counts[0]}" if len(counts) == 1 else (f"n = {counts[0]}-{counts[-1]}" if counts else "n = 0")
        symbol = SYMBOLS.get(p)
        ax.set_title(f"{symbol} ({p})" if symbol else p, fontsize=12)
        missing = f"; {len(rows)} of {len(values)} values run" if values is not None and len(rows) < len(values) else ""
        ax.set_xlabel(f"{p} (default {defaults[p]:g})\n{runs} seeds per point{missing}", fontsize=10)
        ax.grid(alpha=0.3)
    direction = "(Img2Txt + Txt2Img) / 2"
    axes[0][0].set_ylabel(f"average {metric} {direction}", fontsize=10)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes[0]), key=lambda hl: len(hl[0]))
    if handles:  # one legend for all panels, outside them: it never hides a point
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    from cmr_bench.registry import display_name

    name = display_name(method) + (f" [{variant}]" if variant else "")
    fig.suptitle(title or f"Parameter sensitivity of {name} on {dataset}: one hyperparameter varied, the others at their defaults",
                 fontsize=12)
    return _save(fig, Path(out))
