"""Tables II-V of the SDCMR paper (and the hashing table) from stored runs, with the
published numbers beside ours, as CSV (machines), LaTeX/booktabs (papers) and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_bench.registry import display_name
from cmr_bench.report.published import published
from cmr_bench.report.results import TUNED_SUFFIX, collect, provenance_note, reference_note
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
    keys: list[str] = field(default_factory=list)  # each row's identity (plugin key), for --methods


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


RE_REPORTED = ", as re-reported in "  # a same-features source cited through another paper


def default_note(chosen: str) -> str:
    """What "default" means in a table whose validation-chosen defaults are `chosen`."""
    return ("Each method's default configuration: its paper's hyperparameters where the paper gives them; where it gives "
            "none, or where they fail on these features, the value was chosen once on a validation split carved from Wikipedia's "
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
                rows.append((display_name(name), name))
                if cls.info.status == "baseline":  # reference rows (label-softmax): each variant too
                    rows += [(display_name(f"{name}[{v}]"), f"{name}[{v}]") for v in cls.variants]
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
    records, display, folders, tuned_folders, row_keys = [], [], [], [], []
    for label, key in rows:
        row_keys.append(key or label)
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
        label = "Label oracle (ceiling)"  # "from labels": its status
        records.append({"method": label, "plugin": "", "status": "from labels", "img2txt_mean": ceiling[0],
                        "txt2img_mean": ceiling[1], "avg": sum(ceiling) / 2, "runs": 0})
        row_keys.append("label-oracle")
        display.append({"Method": label, f"{lab}Img2Txt": f"{ceiling[0]:.3f}", f"{lab}Txt2Img": f"{ceiling[1]:.3f}",
                        f"{lab}Avg": f"{sum(ceiling) / 2:.3f}", f"{lab}n": ""})
    notes += [default_note(
        "input z-scoring of the deep methods, the classical methods' regularisation weights (JRL, JFSSL, LCFS, LGCFL, "
        "CCA-3V, SCM, KCCA), CAAL's 60 epochs and 1024 units, and schedules shorter than some papers' (CPU budget)")]
    shown_keys = keys + [k + TUNED_SUFFIX for k in keys if k]
    notes += _features_note(dataset, pub, root) + reference_note(runs, shown_keys) + provenance_note(runs, shown_keys)
    if len(same):
        read = [(r, *str(r["source"]).partition(RE_REPORTED)[::2]) for _, r in same.iterrows() if pd.notna(r["img2txt"])]
        vias = {via for _, _, via in read}
        shared = len(vias) == 1 and "" not in vias  # one re-report for all: named once
        refs = "; ".join(f"{r['method']} {r['img2txt']:.3f}/{r['txt2img']:.3f} ({own if shared else r['source']})"
                         for r, own, _ in read) + (f"; all as re-reported in {vias.pop()}" if shared else "")
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
        records, display, row_keys = [records[i] for i in keep], [display[i] for i in keep], [row_keys[i] for i in keep]
    notes += implementation_notes([(r["method"], r.get("plugin", "")) for r in records])  # the rows shown
    if include_overrides:
        notes.append("Rows with {key=value} are runs made with --set: not the method's published configuration.")
    return Table(f"table{table}", dataset, TITLES[table], pd.DataFrame(records), pd.DataFrame(display), notes, row_keys)


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
        rec, disp = {"method": display_name(key), "plugin": key}, {"Method": display_name(key)}
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
    notes += implementation_notes([(display_name(k), k) for k in keys if "[" not in k])
    if not variants and keys:
        ssah = (", SSAH's balanced pair weights and code-length-scaled hash term" + (
            f" (its paper's loss is the row {display_name('ssah[paper loss]')})" if "ssah[paper loss]" in keys else "")) if "ssah" in keys else ""
        notes.append(default_note(f"input z-scoring, learning rates{ssah}, and schedules shorter than the papers' (CPU budget)"))
    notes += reference_note(runs, keys) + provenance_note(runs, keys)
    name = "djsrh_ablation" if variants else f"hash_{metric.replace('@', '')}"
    return Table(name, dataset, TITLES["djsrh-ablation" if variants else "hash"], pd.DataFrame(records), pd.DataFrame(display), notes,
                 list(keys))


def _is_number(value) -> bool:
    if value == "":
        return True
    try:
        float(str(value).replace("+", "", 1))
        return True
    except ValueError:
        return False


def _md_safe(value, cell: bool = False):
    """A cell, header, title or note for Markdown: no raw HTML (a `--set` value holding <script> is
    text, not markup: every `<` that could open a tag and every `&` that could start an entity is
    escaped; "p < 0.05" stays as it is) and, in a cell, no `|` splitting the row."""
    if not isinstance(value, str):
        return value
    import re

    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", re.sub(r"&(?=#?\w+;)", "&amp;", value))
    return " ".join((text.replace("|", "\\|") if cell else text).split())


def _md_cell(value):
    return _md_safe(value, cell=True)


def to_markdown(t: Table) -> str:
    # disable_numparse: "0.450" stays "0.450" (tabulate would print 0.45); numeric columns still right-aligned
    frame = t.display.fillna("")
    frame = frame.rename(columns=_md_cell).apply(lambda col: col.map(_md_cell)) if not frame.empty else frame
    body = frame.to_markdown(index=False, disable_numparse=True, colalign=[
        "right" if all(_is_number(v) for v in frame[c]) else "left" for c in frame.columns]) if not t.display.empty else "(no rows)"
    notes = "\n".join(f"- {_md_safe(n)}" for n in t.notes)
    return f"**{_md_safe(t.title)} — {_md_safe(t.dataset)}**\n\n{body}\n\n{notes}\n"


# Unicode the tables and notes use, as LaTeX that compiles with or without fontenc/inputenc.
_LATEX_SYMBOLS = (("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("→", "$\\to$"), ("↔", "$\\leftrightarrow$"), ("—", "---"), ("–", "--"),
                  ("×", "$\\times$"), ("≤", "$\\leq$"), ("≥", "$\\geq$"), ("≈", "$\\approx$"), ("≠", "$\\neq$"), ("·", "$\\cdot$"),
                  ("…", "\\ldots{}"), ("’", "'"), ("‘", "`"), ("“", "``"), ("”", "''"), ("†", "$^\\dagger$"), ("‡", "$^\\ddagger$"),
                  ("α", "$\\alpha$"), ("β", "$\\beta$"), ("γ", "$\\gamma$"), ("δ", "$\\delta$"), ("η", "$\\eta$"), ("λ", "$\\lambda$"),
                  ("μ", "$\\mu$"), ("σ", "$\\sigma$"), ("τ", "$\\tau$"), ("∞", "$\\infty$"), ("✓", "yes"), ("✗", "no"))
# Characters LaTeX treats as commands, as text.
_LATEX_SPECIALS = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
                   "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "<": "\\textless{}", ">": "\\textgreater{}",
                   "|": "\\textbar{}", '"': "\\texttt{\\char34}", "`": "\\texttt{\\char96}"}  # both in OT1 and T1


def _latex_text(text: str) -> str:
    """Plain text: every special character escaped, known symbols as math, Latin-1 letters as
    they are, anything else as its ASCII base or "?" (a stray symbol must not stop pdflatex)."""
    import unicodedata

    import re

    out = re.sub(r"-(?=-)", "-{}", "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text))  # "--set": two hyphens, no dash
    for symbol, tex in _LATEX_SYMBOLS:
        out = out.replace(symbol, tex)
    keep = lambda ch: ord(ch) < 128 or (ord(ch) < 256 and unicodedata.category(ch).startswith("L"))  # noqa: E731  é: LaTeX's utf8
    return "".join(ch if keep(ch) else unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?" for ch in out)


def _latex_escape(s) -> str:
    """A cell or note as LaTeX: `code` -> \\texttt, **bold** -> \\textbf, comparisons such as
    "p < 0.05" in math mode, the rest escaped as text."""
    import re

    def math(m):  # "p < 0.05", "n = 5": one formula
        op = {"<": "<", ">": ">", "=": "=", "≤": "\\leq", "≥": "\\geq"}[m.group(2)]
        return f"${m.group(1)} {op} {m.group(3)}$"

    parts = re.split(r"(`[^`]+`|\*\*.+?\*\*|\b[A-Za-z]\s*[<>=≤≥]\s*-?[0-9][0-9.]*\b)", str(s))
    out = []
    for part in parts:
        if not part:
            continue
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"\\texttt{{{_latex_text(part[1:-1])}}}")
        elif part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(f"\\textbf{{{_latex_escape(part[2:-2])}}}")
        elif re.fullmatch(r"[A-Za-z]\s*[<>=≤≥]\s*-?[0-9][0-9.]*", part):
            out.append(re.sub(r"([A-Za-z])\s*([<>=≤≥])\s*(-?[0-9][0-9.]*)", math, part))
        else:
            out.append(_latex_text(part))
    return "".join(out)


def latex_caption(t: Table) -> str:
    """The title without its "Table II:" prefix: LaTeX numbers the table itself."""
    import re

    caption = re.sub(r"^Table [IVX0-9]+:\s*", "", t.title)
    if t.name == "hash_map50":  # the two hashing tables differ only in the metric: say which
        caption = caption.replace("MAP", "MAP@50")
    return caption


def latex_label(t: Table) -> str:
    import re

    return "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", f"{t.name}-{t.dataset}").strip("-").lower()


LATEX_COLUMNS = ("ci", "n", "paper", "same-features")  # extra LaTeX columns, on request (`table --columns`)


def _latex_blocks(t: Table, columns) -> tuple[str, list[tuple[str, list[tuple[str, str]]]]]:
    """("columns" | "rows", [(block title, [(header, display column), ...]), ...]): the paper's
    layout. Paper tables: Method | Img2Txt | Txt2Img | Avg, a block of columns per configuration
    (default, tuned) as the paper has per dataset; hashing tables: a column per code length, a
    block of rows per direction. `columns` adds extras (LATEX_COLUMNS)."""
    import re

    have = set(t.display.columns)
    bits = sorted({int(m.group(1)) for c in have if (m := re.fullmatch(r"I→T (\d+)", c))})
    if bits:
        blocks = []
        for arrow, title in (("I→T", "Img2Txt"), ("T→I", "Txt2Img")):
            spec = []
            for b in bits:
                spec.append((f"{b} bits", f"{arrow} {b}"))
                if "ci" in columns:
                    spec.append(("95% CI", f"{arrow} {b} 95% CI"))
            spec += [("n", "n")] if "n" in columns else []
            blocks.append((title, spec))
        return "rows", blocks
    titles = {"Default ": "Default", "Tuned ": "Tuned", "": ""}
    blocks = []
    for prefix in (p for p in titles if f"{p}Img2Txt" in have):
        spec = []
        for d in ("Img2Txt", "Txt2Img"):
            spec.append((d, f"{prefix}{d}"))
            if "ci" in columns:
                spec.append(("95% CI", f"{prefix}{d} 95% CI"))
        spec.append(("Avg", f"{prefix}Avg"))
        spec += [("n", f"{prefix}n")] if "n" in columns else []
        blocks.append((titles[prefix], spec))
    if "paper" in columns:
        blocks.append(("Published", [("Img2Txt", "Paper Img2Txt"), ("Txt2Img", "Paper Txt2Img"), ("Avg", "Paper Avg"),
                                     ("$\\Delta$ Avg", "Δ Avg")]))
    if "same-features" in columns and "Same-features ref." in have:
        blocks.append(("Same features", [("Img2Txt / Txt2Img", "Same-features ref.")]))
    return "columns", blocks


def _latex_cell(value) -> str:
    """A table cell: "0.283 ± 0.012 †" as one formula (tight, the mark as a superscript),
    "**...**" (the column's best) in bold, math included; the rest as `_latex_escape`."""
    import re

    text = str(value)
    bold = re.fullmatch(r"\*\*(.+)\*\*", text.strip())
    if bold:
        return f"\\textbf{{\\boldmath {_latex_cell(bold.group(1))}}}"

    def formula(m):
        mark = "\\rlap{$^\\dagger$}" if m.group(3) else ""  # the mark takes no width: numbers stay aligned
        return f"\x00${m.group(1)} \\pm {m.group(2)}${mark}\x01"

    text = re.sub(r"(-?\d+\.\d+) ± (\d+\.\d+)( †)?", formula, text)
    return "".join(part[1:] if part.startswith("\x00") else _latex_escape(part) for part in re.split(r"(\x00[^\x01]*)\x01", text))


def to_latex(t: Table, columns=()) -> str:
    """A table* float at the document's font size, no scaling: caption above, a label, the
    tabular in the paper's layout (`_latex_blocks`), the notes as a footnote-size paragraph below."""
    bad = [c for c in columns if c not in LATEX_COLUMNS]
    if bad:
        from cmr_bench.errors import UnknownNameError

        raise UnknownNameError("table column", bad[0], LATEX_COLUMNS)
    orientation, blocks = _latex_blocks(t, columns)
    frame = t.display.fillna("").astype(str)
    cell = lambda row, col: _latex_cell(row.get(col, "")) if col in frame else ""  # noqa: E731
    if orientation == "rows":
        head = [("Method", "Method")] + blocks[0][1]
        width = len(head)
        header = [" & ".join(_latex_escape(h) for h, _ in head) + " \\\\"]
    else:
        blocks = [(title, spec) for title, spec in blocks  # a configuration nothing was run with (or no published number): no columns
                  if any(frame[col].str.strip().any() for _, col in spec if col in frame)]
        blocks = blocks or [("", [])]
        head = [("Method", "Method")] + [hc for _, spec in blocks for hc in spec]
        width = len(head)
        groups, first, rules = ["Method"], 2, []
        for title, spec in blocks:
            groups.append(f"\\multicolumn{{{len(spec)}}}{{c}}{{{_latex_escape(title)}}}")
            rules.append(f"\\cmidrule(lr){{{first}-{first + len(spec) - 1}}}")
            first += len(spec)
        header = ([" & ".join(groups) + " \\\\", "".join(rules)] if len(blocks) > 1 or blocks[0][0] else [])
        header.append(" & ".join("" if h == "Method" and header else _latex_escape(h) if "$" not in h else h for h, _ in head)
                      + " \\\\")
    lines = [
        "% generated by cmr-bench table; needs \\usepackage{booktabs}",
        "\\begin{table*}[t]", "\\centering", "\\setlength{\\tabcolsep}{5pt}",
        "\\renewcommand{\\arraystretch}{0.95}",  # same font size, 5% less leading: Table II's 27 rows and notes fit a page
        f"\\caption{{{_latex_escape(latex_caption(t))} ({_latex_escape(t.dataset)})}}",
        f"\\label{{{latex_label(t)}}}",
        "\\begin{tabular}{l" + "c" * (width - 1) + "}", "\\toprule", *header,
    ]
    if orientation == "rows":
        for title, spec in blocks:
            lines += ["\\midrule", f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_latex_escape(title)}}}}} \\\\"]
            lines += [" & ".join([_latex_escape(row["Method"])] + [cell(row, col) for _, col in spec]) + " \\\\"
                      for _, row in frame.iterrows()]
    else:
        lines.append("\\midrule")
        lines += [" & ".join([_latex_escape(row["Method"])] + [cell(row, col) for _, col in head[1:]]) + " \\\\"
                  for _, row in frame.iterrows()]
    lines += ["\\bottomrule", "\\end{tabular}"]
    if t.notes:
        # One script-size paragraph: Table II's eleven notes as separate footnote-size paragraphs
        # made the float taller than a page of a two-column article.
        lines += ["", "\\begin{minipage}{\\textwidth}\\scriptsize\\raggedright"]
        lines.append("\n".join(_latex_escape(n) for n in t.notes) + "\\par")
        lines.append("\\end{minipage}")
    lines += ["\\end{table*}", ""]
    return "\n".join(lines)


def select_rows(t: Table, methods: list[str]) -> Table:
    """The rows `methods` names, in that order (`table --methods`): a plugin key (with its tuned
    and --set rows), a name[variant], or the row's label as printed; an unknown name is an error."""
    from cmr_bench.errors import UnknownNameError

    keys = t.keys or list(t.display["Method"]) if not t.display.empty else []
    labels = list(t.display["Method"]) if not t.display.empty else []
    order: list[int] = []
    for wanted in methods:
        w = wanted.strip().lower()
        hits = [i for i, (k, label) in enumerate(zip(keys, labels))
                if w in (k.lower(), str(label).lower()) or k.lower().startswith((w + " (", w + " {"))]
        if not hits:
            raise UnknownNameError(f"row of {t.name}", wanted, sorted(set(keys)))
        order += [i for i in hits if i not in order]
    frame = t.frame.iloc[order].reset_index(drop=True) if len(t.frame) == len(labels) else t.frame
    notes = list(t.notes)
    if len(order) < len(labels):  # the marks were computed on the whole column: say so, never imply otherwise
        notes.append(f"{len(labels) - len(order)} row(s) left out (--methods); CIs and marks compare each entry with "
                     "every row of the full table, shown or not.")
    return Table(t.name, t.dataset, t.title, frame, t.display.iloc[order].reset_index(drop=True), notes,
                 [keys[i] for i in order])


def write_table(t: Table, out_dir: Path, formats: list[str], columns=()) -> list[Path]:
    from cmr_bench.safe_io import make_folder, write_text

    make_folder(out_dir, "table folder")
    written = []
    for fmt in formats:
        path = out_dir / f"{t.name}.{ {'csv': 'csv', 'latex': 'tex', 'md': 'md'}[fmt] }"
        if fmt == "csv":
            text = t.frame.to_csv(index=False, float_format="%.4f")
        elif fmt == "latex":
            text = to_latex(t, columns)
        else:
            text = to_markdown(t)
        written.append(write_text(path, text, "table file"))
    return written
