"""Tables II-V of the SDCMR paper (and the hashing table) from stored runs, with the
published numbers beside ours, as CSV (machines), LaTeX/booktabs (papers) and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_bench.report.published import published
from cmr_bench.report.results import TUNED_SUFFIX, collect, reference_note
from cmr_bench.report.significance import annotate
from cmr_bench.report.summary import mean_std

TITLES = {
    "2": "Table II: MAP of cross-modal retrieval",
    "3": "Table III: ablation study of SDCMR",
    "4": "Table IV: comparison with other decoupling methods",
    "5": "Table V: integration with advanced backbones (BLIP-2)",
    "hash": "Cross-modal hashing: MAP by code length",
    "djsrh-ablation": "DJSRH ablations (its Table 1)",
}


@dataclass
class Table:
    name: str
    dataset: str
    title: str
    frame: pd.DataFrame  # numeric, for CSV
    display: pd.DataFrame  # formatted strings, for Markdown / LaTeX
    notes: list[str] = field(default_factory=list)


def _fmt(mean, std, n) -> str:
    if n == 0:
        return "—"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"  # one run has no spread to show


def _status_text(runs: pd.DataFrame, has_plugin: bool) -> str:
    if not has_plugin:
        return "no plugin"
    if runs.empty:
        return "not run"
    failed = int((runs["status"] != "done").sum())
    done = int((runs["status"] == "done").sum())
    if done == 0:
        return f"failed ({failed})"
    return f"{done} runs" + (f", {failed} failed" if failed else "")


def implementation_notes(rows: list[tuple[str, str]]) -> list[str]:
    """What the rows' implementations are (the README's status legend) and what they trained on,
    for the rows (label, plugin key) that have a plugin."""
    from cmr_bench.plugin import STATUS_MEANING
    from cmr_bench.registry import all_methods

    plugins, by_status, refit = all_methods(), {}, []
    for label, key in rows:
        cls = plugins.get(key.split(" {")[0].split("[")[0]) if key else None
        if cls is None or cls.info.status == "baseline" or label in by_status.get(cls.info.status, []):
            continue
        by_status.setdefault(cls.info.status, []).append(label)
        if cls.uses_validation and cls.defaults.get("select_on_validation") and label not in refit:
            refit.append(label)
    notes = []
    if by_status:
        gloss = {"modified": " (default loss departs from the paper's; the paper's form is its own row)",
                 "partial": " (major parts of the paper left out)", "from abstract": " (approximated from the abstract only)"}
        notes.append("Implementation status (README legend): " + "; ".join(
            f"{s}{gloss.get(s, '')}: {', '.join(by_status[s])}" for s in STATUS_MEANING if s in by_status) + ".")
    if refit:
        notes.append(f"Every row trains on the whole training split: {', '.join(refit)} select their number of epochs on "
                     "a validation split carved from it (10%), then are retrained from the same seed on all of it for "
                     "that many epochs.")
    return notes


def default_note(chosen: str) -> str:
    """What "default" means in a table whose validation-chosen defaults are `chosen`."""
    return ("Default: each method's published hyperparameters where its paper gives them; where it gives none, or where "
            "they fail on these features, the value was chosen once on a validation split carved from Wikipedia's "
            f"training set (never the test split), listed per method in docs/methods.md: {chosen}.")


def _features_note(dataset: str, pub: pd.DataFrame, root: Path | None = None) -> list[str]:
    from cmr_bench.data.manifest import find_manifest

    notes = []
    try:
        m = find_manifest(dataset, root)
        ours = f"{m.raw.get('image_features', '?')} / {m.raw.get('text_features', '?')}"
    except Exception:
        ours = "unknown"
    paper_features = sorted(set(pub["features"]))
    if paper_features:
        notes.append(
            f"Published values use {'; '.join(paper_features)}; ours use {ours}. "
            "Where the features differ, compare orderings and gaps, not absolute values."
        )
    return notes


# Table V's rows are the backbone alone and SDCMR on its features: our plugins for them, run on a
# dataset from `cmr-bench features extract` whose manifest names the paper's dataset.
TABLE5_PLUGINS = {"blip2": "backbone-zero-shot", "blip2+sdcmr": "sdcmr"}


def _table5_source(dataset: str, root: Path | None) -> tuple[str, dict]:
    """(the paper dataset whose published rows apply, the [features] record or {})."""
    from cmr_bench.data.manifest import find_manifest

    try:
        m = find_manifest(dataset, root)
    except Exception:
        return dataset, {}
    paper = m.raw.get("paper_dataset")
    return (paper, dict(m.raw.get("features", {}))) if isinstance(paper, str) and paper else (dataset, {})


def paper_table(table: str, dataset: str, runs_dir: Path, metric: str = "map@all", root: Path | None = None,
                include_overrides: bool = False, hide_missing: bool = False, reference: Path | None = None) -> Table:
    """`include_overrides`: runs made with --set get a row of their own per configuration, under
    their method's row; `hide_missing`: leave out rows without a run of ours (no plugin, not run)."""
    from cmr_bench.registry import all_methods

    pub_all = published(table)
    paper_dataset, features = _table5_source(dataset, root) if table == "5" else (dataset, {})
    pub = pub_all[(pub_all["dataset"] == paper_dataset) & (~pub_all["table"].astype(str).str.contains("same-features"))]
    same = pub_all[(pub_all["dataset"] == paper_dataset) & (pub_all["table"].astype(str).str.contains("same-features"))]
    runs = collect(runs_dir, dataset, protocol="real", include_overrides=include_overrides, reference=reference, root=root)
    plugins = all_methods()
    # Rows: the paper's rows in its order, then our real-valued methods the paper lacks (table II only).
    rows = [(r["method"], r["key"]) for _, r in pub.iterrows()]
    if table == "2":
        listed = {k for _, k in rows}
        for name, cls in plugins.items():
            if cls.code_type == "real" and name not in listed and name != "backbone-zero-shot":  # Table V's
                rows.append((name, name))
                if cls.info.status == "baseline":  # reference rows (label-softmax): each variant too
                    rows += [(f"{name} [{v}]", f"{name}[{v}]") for v in cls.variants]
        # Same-features references without a plugin of ours get a row of their own; those with
        # one (CCA) appear in the "same-features ref." column of their row.
        rows += [(r["method"] + " (same features)", f"same:{r['method']}") for _, r in same.iterrows() if not r["key"]]
    if not rows:
        raise_missing(table, dataset)
    if include_overrides and not runs.empty:
        rows = [r for label, key in rows for r in [(label, key)] + [
            (f"{label} {k[len(key) + 1:]}", k) for k in sorted(set(runs["key"])) if key and k.startswith(key + " {")]]
    # Runs made with --config tuned: columns of their own beside the default ones, only when some exist.
    has_tuned = not runs.empty and bool(runs["key"].str.endswith(TUNED_SUFFIX).any())
    lab = "Default " if has_tuned else ""
    records, display, folders, tuned_folders = [], [], [], []
    for label, key in rows:
        if table == "5" and features:  # never SDCMR's runs on the dataset's own features
            key = TABLE5_PLUGINS.get(key, key)
        base = key.split(" {")[0].split("[")[0]
        has_plugin = bool(key) and base in plugins
        mine = runs[runs["key"] == key] if (has_plugin and not runs.empty) else pd.DataFrame()
        done = mine[mine["status"] == "done"] if not mine.empty else mine
        folders.append(list(done["folder"]) if not done.empty else [])
        i2t = mean_std(done.get(f"i2t:{metric}", [])) if not done.empty else (np.nan, np.nan, 0)
        t2i = mean_std(done.get(f"t2i:{metric}", [])) if not done.empty else (np.nan, np.nan, 0)
        avg = (i2t[0] + t2i[0]) / 2 if i2t[2] and t2i[2] else np.nan
        if key.startswith("same:"):
            p = same[same["method"] == key[5:]].iloc[0]
        else:
            match = pub[pub["method"] == label]
            p = match.iloc[0] if len(match) else None
        p_i2t, p_t2i, p_avg = (p["img2txt"], p["txt2img"], p["avg"]) if p is not None else (np.nan,) * 3
        ref = same[same["key"] == key] if key and not key.startswith("same:") else same.iloc[0:0]
        status = "reference" if key.startswith("same:") else _status_text(mine, has_plugin)
        if table == "5" and not features:
            status = "needs backbone features"
        rec = {
            "method": label, "plugin": key if has_plugin else "", "status": status,
            "img2txt_mean": i2t[0], "img2txt_std": i2t[1], "txt2img_mean": t2i[0], "txt2img_std": t2i[1], "avg": avg,
            "runs": i2t[2], "paper_img2txt": p_i2t, "paper_txt2img": p_t2i, "paper_avg": p_avg,
            "delta_avg": avg - p_avg if pd.notna(avg) and pd.notna(p_avg) else np.nan,
            "same_features_img2txt": ref["img2txt"].iloc[0] if len(ref) else np.nan,
            "same_features_txt2img": ref["txt2img"].iloc[0] if len(ref) else np.nan,
        }
        records.append(rec)
        cells = {
            "Method": label,
            f"{lab}Img2Txt": _fmt(*i2t) if i2t[2] else status,
            f"{lab}Txt2Img": _fmt(*t2i) if t2i[2] else "",
            f"{lab}Avg": f"{avg:.3f}" if pd.notna(avg) else "",
            f"{lab}n": i2t[2] or "",
        }
        if has_tuned:
            tuned = runs[(runs["key"] == key + TUNED_SUFFIX) & (runs["status"] == "done")] if has_plugin else runs.iloc[0:0]
            tuned_folders.append(list(tuned["folder"]))
            t_i2t, t_t2i = (mean_std(tuned.get(f"{d}:{metric}", [])) if not tuned.empty else (np.nan, np.nan, 0) for d in ("i2t", "t2i"))
            t_avg = (t_i2t[0] + t_t2i[0]) / 2 if t_i2t[2] and t_t2i[2] else np.nan
            rec.update({"tuned_img2txt_mean": t_i2t[0], "tuned_img2txt_std": t_i2t[1], "tuned_txt2img_mean": t_t2i[0],
                        "tuned_txt2img_std": t_t2i[1], "tuned_avg": t_avg, "tuned_runs": t_i2t[2]})
            cells.update({"Tuned Img2Txt": _fmt(*t_i2t) if t_i2t[2] else "", "Tuned Txt2Img": _fmt(*t_t2i) if t_t2i[2] else "",
                          "Tuned Avg": f"{t_avg:.3f}" if pd.notna(t_avg) else "", "Tuned n": t_i2t[2] or ""})
        display.append({
            **cells,
            "Paper Img2Txt": _num(p_i2t), "Paper Txt2Img": _num(p_t2i), "Paper Avg": _num(p_avg),
            "Δ Avg": f"{rec['delta_avg']:+.3f}" if pd.notna(rec["delta_avg"]) else "",
        })
        if len(same):
            display[-1]["Same-features ref."] = (
                f"{rec['same_features_img2txt']:.3f} / {rec['same_features_txt2img']:.3f}"
                if pd.notna(rec["same_features_img2txt"]) else ""
            )
    notes = [f"Ours: {metric} (mean ± sample std over seeds, n runs); retrieval by cosine; protocol 'real' (test queries vs test set)."]
    keys = [r["plugin"] for r in records]  # a method's rows at other configs (--set) are one family
    notes += annotate(records, display, folders, [("i2t", "img2txt", f"{lab}Img2Txt"), ("t2i", "txt2img", f"{lab}Txt2Img")], metric, keys=keys)
    if has_tuned:  # marks per column: tuned entries are compared with each other
        notes += [n for n in annotate(records, display, tuned_folders, [("i2t", "tuned_img2txt", "Tuned Img2Txt"),
                                                                          ("t2i", "tuned_txt2img", "Tuned Txt2Img")], metric, keys=keys) if n not in notes]
        notes.append("Tuned: each method's best configuration from `cmr-bench tune` (the same trial budget per method, "
                     "chosen by mAP on a validation split carved from train, for the unsupervised methods too: their "
                     "training never reads labels, their selection does; the test split is never read), run with "
                     "`--config tuned` on the same protocol.")
    ceiling = _label_ceiling(dataset, root, metric) if table == "2" else None
    if ceiling is not None:  # codes = the items' own labels: no method can rank better
        label = "label oracle (ceiling, from labels)"
        records.append({"method": label, "plugin": "", "status": "from labels", "img2txt_mean": ceiling[0],
                        "txt2img_mean": ceiling[1], "avg": sum(ceiling) / 2, "runs": 0})
        display.append({"Method": label, f"{lab}Img2Txt": f"{ceiling[0]:.3f}", f"{lab}Txt2Img": f"{ceiling[1]:.3f}",
                        f"{lab}Avg": f"{sum(ceiling) / 2:.3f}", f"{lab}n": ""})
    notes += [default_note(
        "input z-scoring of the deep methods, the classical methods' regularisation weights (JRL, JFSSL, LCFS, LGCFL, "
        "CCA-3V, SCM, KCCA), CAAL's 60 epochs and 1024 units, and schedules shorter than some papers' (CPU budget)")]
    notes += _features_note(dataset, pub, root) + reference_note(runs, keys + [k + TUNED_SUFFIX for k in keys if k])
    if len(same):
        refs = "; ".join(f"{r['method']} {r['img2txt']:.3f}/{r['txt2img']:.3f} ({r['source']})"
                         for _, r in same.iterrows() if pd.notna(r["img2txt"]))
        notes.append(f"Published on the same features as ours: {refs}.")
        unread = [r["method"] for _, r in same.iterrows() if pd.isna(r["img2txt"])]
        if unread:  # published on these features, but the number could not be read: never a guess
            notes.append(f"Also published on these features, number not transcribed: {', '.join(unread)}.")
    notes += sorted({n for n in pub["note"] if n})
    if table == "5" and features:
        notes.append(f"Ours: '{dataset}', {features.get('backbone', '?')} {features.get('model', '?')} features from "
                     f"`cmr-bench features extract`, beside the paper's rows for '{paper_dataset}'; BLIP-2 = "
                     "backbone-zero-shot (the backbone's aligned embeddings, no training), BLIP-2 + SDCMR = sdcmr on them.")
    elif table == "5":
        notes.append("These rows need backbone features of the dataset: make them with `cmr-bench features extract "
                     f"... --paper-dataset {dataset} --out DATA_ROOT/NAME` and run `table --table 5 --dataset NAME`.")
    if hide_missing:
        keep = [i for i, r in enumerate(records)
                if r["status"] not in ("no plugin", "not run", "needs backbone features") or r.get("tuned_runs")]
        if len(keep) < len(records):
            notes.append(f"{len(records) - len(keep)} row(s) without a run of ours left out (--hide-missing).")
        records, display = [records[i] for i in keep], [display[i] for i in keep]
    notes += implementation_notes([(r["method"], r.get("plugin", "")) for r in records])  # the rows shown
    if include_overrides:
        notes.append("Rows with {key=value} are runs made with --set: not the method's published configuration.")
    return Table(f"table{table}", dataset, TITLES[table], pd.DataFrame(records), pd.DataFrame(display), notes)


def _label_ceiling(dataset: str, root: Path | None, metric: str) -> tuple[float, float] | None:
    """The protocol's ceiling, from labels alone: both directions scored with codes that are the
    items' one-hot / multi-hot labels. None when the dataset's files are not at hand."""
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.evaluation import evaluate
    from cmr_bench.runner.spec import EVAL_KS

    try:
        ds = load_dataset(dataset, root)
        proto = ds.protocol("real")
        query, retrieval = ds.split(proto.query), ds.split(proto.retrieval)
    except Exception:
        return None
    codes = lambda s: s.labels.astype(np.float32) if s.labels.ndim == 2 else np.eye(ds.num_classes, dtype=np.float32)[s.labels]  # noqa: E731
    score = evaluate(codes(query), codes(retrieval), query.labels, retrieval.labels, similarity="cosine", ks=EVAL_KS, device="cpu")
    value = float(score.get(metric, np.nan))
    return value, value  # the same codes stand for both modalities


def _num(x) -> str:
    return f"{x:.3f}" if pd.notna(x) else ""


def raise_missing(table: str, dataset: str):
    from cmr_bench.errors import CmrBenchError

    raise CmrBenchError(f"Table {table} of the SDCMR paper has no rows for dataset '{dataset}'")


def hash_table(dataset: str, runs_dir: Path, metric: str = "map@all", variants: bool = False,
               include_overrides: bool = False, hide_missing: bool = False, reference: Path | None = None) -> Table:
    """Methods (or DJSRH variants) x code lengths x directions, mean ± std over seeds, and n
    (runs per cell: one number, or min-max when the cells differ)."""
    from cmr_bench.registry import all_methods

    runs = collect(runs_dir, dataset, include_overrides=include_overrides, reference=reference)
    binary = [n for n, c in all_methods().items() if c.code_type == "binary"]
    runs = runs[runs["method"].isin(binary)] if not runs.empty else runs
    if variants:
        runs = runs[runs["method"] == "djsrh"] if not runs.empty else runs
    keys = sorted(set(runs["key"])) if not runs.empty else []
    if not variants:  # a method's row variants (its paper's form beside its default) are rows too
        shown = {f"{n}[{v}]" for n in binary for v in all_methods()[n].row_variants}
        keys = [k for k in keys if "[" not in k or k.split(" {")[0] in shown] or keys
        keys = sorted(set(keys) | ({n for n in binary if all_methods()[n].in_all} | shown if not hide_missing else set()))
    bits = sorted({int(b) for b in runs["bits"].dropna()}) if not runs.empty else []
    records, display, folders = [], [], {b: [] for b in bits}
    for key in keys:
        mine = runs[runs["key"] == key] if not runs.empty else runs
        rec, disp = {"method": key}, {"Method": key}
        counts = []
        for b in bits:
            sel = mine[(mine["bits"] == b) & (mine["status"] == "done")]
            folders[b].append(list(sel["folder"]))
            for d, label in (("i2t", "I→T"), ("t2i", "T→I")):
                m, s, n = mean_std(sel.get(f"{d}:{metric}", []))
                rec[f"{d}_{b}_mean"], rec[f"{d}_{b}_std"], rec[f"{d}_{b}_n"] = m, s, n
                counts.append(n)
                failed = int(((mine["bits"] == b) & (mine["status"] != "done")).sum()) if not mine.empty else 0
                disp[f"{label} {b}"] = _fmt(m, s, n) if n else ("failed" if failed else "not run")
        done = [c for c in counts if c]
        disp["n"] = "" if not done else (str(min(done)) if min(done) == max(done) else f"{min(done)}-{max(done)}")
        records.append(rec)
        display.append(disp)
    notes = [f"{metric}, Hamming ranking (ties: expected value over tied orders), mean ± sample std over seeds."]
    for b in bits:  # each code length is its own comparison
        notes += [n for n in annotate(records, display, folders[b], [("i2t", f"i2t_{b}", f"I→T {b}"), ("t2i", f"t2i_{b}", f"T→I {b}")],
                                      metric, keys=keys) if n not in notes]
    notes += implementation_notes([(k, k) for k in keys if "[" not in k])
    if not variants and keys:
        ssah = (", SSAH's balanced pair weights and code-length-scaled hash term" + (
            " (its paper's loss is the row ssah[paper loss])" if "ssah[paper loss]" in keys else "")) if "ssah" in keys else ""
        notes.append(default_note(f"input z-scoring, learning rates{ssah}, and schedules shorter than the papers' (CPU budget)"))
    notes += reference_note(runs, keys)
    name = "djsrh_ablation" if variants else f"hash_{metric.replace('@', '')}"
    return Table(name, dataset, TITLES["djsrh-ablation" if variants else "hash"], pd.DataFrame(records), pd.DataFrame(display), notes)


def _is_number(value) -> bool:
    if value == "":
        return True
    try:
        float(str(value).replace("+", "", 1))
        return True
    except ValueError:
        return False


def to_markdown(t: Table) -> str:
    # disable_numparse: "0.450" stays "0.450" (tabulate would print 0.45); numeric columns still right-aligned
    frame = t.display.fillna("")
    body = frame.to_markdown(index=False, disable_numparse=True, colalign=[
        "right" if all(_is_number(v) for v in frame[c]) else "left" for c in frame.columns]) if not t.display.empty else "(no rows)"
    notes = "\n".join(f"- {n}" for n in t.notes)
    return f"**{t.title} — {t.dataset}**\n\n{body}\n\n{notes}\n"


def _latex_escape(s: str) -> str:
    text = str(s).replace("\\", "\\textbackslash ")
    for ch in "&%_#{}$":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("\\textbackslash ", "\\textbackslash{}").replace("~", "\\textasciitilde{}").replace("^", "\\textasciicircum{}")
    for symbol, tex in (("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("→", "$\\to$"), ("—", "--"), ("–", "--"), ("×", "$\\times$"),
                        ("≤", "$\\leq$"), ("≥", "$\\geq$"), ("·", "$\\cdot$"), ("…", "\\ldots{}"), ("’", "'"), ("†", "$^\\dagger$")):
        text = text.replace(symbol, tex)
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", text)  # Markdown bold (significance marks)


def latex_caption(t: Table) -> str:
    """The title without its "Table II:" prefix: LaTeX numbers the table itself."""
    import re

    return re.sub(r"^Table [IVX0-9]+:\s*", "", t.title)


def latex_label(t: Table) -> str:
    import re

    return "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", f"{t.name}-{t.dataset}").strip("-").lower()


def to_latex(t: Table) -> str:
    """A float that fits a two-column paper: table* (both columns) with the tabular scaled to the
    text width, caption above, a label, notes below in footnote size."""
    cols = list(t.display.columns)
    lines = [
        "% generated by cmr-bench table; needs \\usepackage{booktabs} and \\usepackage{graphicx}",
        "\\begin{table*}[t]", "\\centering",
        f"\\caption{{{_latex_escape(latex_caption(t))} ({_latex_escape(t.dataset)})}}",
        f"\\label{{{latex_label(t)}}}",
        "\\resizebox{\\textwidth}{!}{%",
        "\\begin{tabular}{l" + "c" * (len(cols) - 1) + "}", "\\toprule",
        " & ".join(_latex_escape(c) for c in cols) + " \\\\", "\\midrule",
    ]
    for _, row in t.display.fillna("").iterrows():
        lines.append(" & ".join(_latex_escape(row[c]) for c in cols) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}"]
    lines += [f"\\par\\footnotesize {_latex_escape(n)}" for n in t.notes]
    lines += ["\\end{table*}", ""]
    return "\n".join(lines)


def write_table(t: Table, out_dir: Path, formats: list[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / f"{t.name}.{ {'csv': 'csv', 'latex': 'tex', 'md': 'md'}[fmt] }"
        if fmt == "csv":
            text = t.frame.to_csv(index=False, float_format="%.4f")
        elif fmt == "latex":
            text = to_latex(t)
        else:
            text = to_markdown(t)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written
