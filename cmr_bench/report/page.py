"""The report a person opens: report.html (no script, no network; figures embedded as PNG data
or, with figures="link", the PNG files beside it) and its Markdown twin report.md, built from
stored runs only and from the figure/table files already in the output folder.

`write_report(results_dir, dataset, out_dir, root=None, experiment=None, name="report",
figures="embed")`. The experiment (a dict, e.g. a parsed experiments/*.toml) is optional; keys
read, all optional:
  name, title, description   shown at the top
  tables                     list of table names ("2".."5", "hash", "djsrh-ablation") or of
                             {table = "hash", metric = "map@50"}; default: every table the
                             store can fill
  figures                    list of {file = "fig_x.png", caption = "..."} (or file names):
                             the page shows these, in this order (a stem without .png, e.g.
                             "fig_pr", stands for fig_pr.png and fig_pr_*.png); without the
                             key, every figure file in out_dir
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from cmr_bench.errors import CmrBenchError
from cmr_bench.plugin import STATUS_MEANING  # one status vocabulary, defined once

DEFAULT_TABLES = ("2", "3", "4", "5", "hash", "djsrh-ablation")
PAPER_TABLES = ("2", "3", "4", "5")
# Environment fields of run.json, in the order shown.
ENV_FIELDS = (("cmr_bench", "cmr-bench"), ("git", "git commit"), ("python", "Python"), ("torch", "torch"),
              ("numpy", "numpy"), ("scipy", "scipy"), ("device", "device"), ("torch_threads", "torch threads"),
              ("platform", "platform"), ("machine", "machine"))
# Figure captions by file name, for files the experiment does not caption.
CAPTIONS = ((r"^fig_pr(_|$)", "Fig. 3: precision-recall curves"),
            (r"sensitiv|sweep", "Fig. 5: parameter sensitivity"),
            (r"tsne", "Fig. 6: t-SNE of the initial features and the learned common representations"),
            (r"^fig_precision_at_r", "Precision@R curves"),
            (r"^fig_code_length", "mAP by code length"),
            (r"^curves", "Training curves"))
SHOWN_VALUES = 4  # environment values listed in the table's cell; the rest are counted
# What the configurations of the rows are (issue 26.3): shown under the page's title.
CONFIG_MEANING = (
    "Configurations. Default: each method's published hyperparameters where its paper gives them; the others "
    "(input z-scoring of the deep methods, the classical methods' regularisation weights such as JRL's and JFSSL's, "
    "CAAL's 60 epochs and 1024 units, SSAH's learning rates and its two loss changes, schedules shorter than some "
    "papers') were chosen once on a validation split carved from the training set, each named in its method's "
    "deviations below. Tuned: the configuration `cmr-bench tune` chose on that validation split (by label-based "
    "mAP, for the unsupervised methods too). Methods that select their epoch on validation are then retrained on "
    "the whole training split for that many epochs, so every row trains on the same items. Nothing is chosen on "
    "the test split."
)


@dataclass
class Section:
    title: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)


# --- escaping ----------------------------------------------------------------------------

def _h(text) -> str:
    return html.escape(str(text), quote=True)


def _h_rich(text) -> str:
    """Our own notes: escaped, then their **bold** and `code` spans as HTML."""
    out = _h(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _md(text) -> str:
    """Text from runs and plugins (names, notes) for Markdown: no raw HTML, no accidental markup."""
    out = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = re.sub(r"([`*|])", r"\\\1", out)
    out = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", out)  # intraword _ is never emphasis
    if re.search(r"\]\s*[(\[]", out):  # only [..](..) and [..][..] make links
        out = out.replace("[", "\\[").replace("]", "\\]")
    return " ".join(out.split())


def _md_note(text) -> str:
    """Our own notes keep their **bold** and `code`; raw HTML is still neutralised."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return " ".join(out.split())


def _bold(cell: str) -> tuple[str, bool]:
    m = re.fullmatch(r"\*\*(.+)\*\*", cell)
    return (m.group(1), True) if m else (cell, False)


def _cell_html(value) -> str:
    text, bold = _bold("" if pd.isna(value) else str(value))
    return f"<strong>{_h(text)}</strong>" if bold else _h(text)


def _cell_md(value) -> str:
    text, bold = _bold("" if pd.isna(value) else str(value))
    return f"**{_md(text)}**" if bold and text else _md(text)


# A row's status in a value column (tables.py) does not make the column text.
STATUS_CELL = re.compile(r"not run|no plugin|failed.*|reference|from labels|needs backbone features|—")


def _numeric(values) -> bool:
    for v in values:
        s = "" if pd.isna(v) else _bold(str(v))[0].replace("†", "").strip()
        if s and not STATUS_CELL.fullmatch(s) and not re.fullmatch(r"[+-]?\d+(\.\d+)?( ± \d+(\.\d+)?)?|\[[-\d.]+, [-\d.]+\]|\d+-\d+", s):
            return False
    return True


def _slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


# --- tables ------------------------------------------------------------------------------

def _table_html(frame: pd.DataFrame, caption: str = "", css: str = "") -> str:
    frame = frame.fillna("")
    cols = list(frame.columns)
    num = {c: _numeric(frame[c]) for c in cols}
    head = "".join(f'<th{" class=num" if num[c] else ""} scope="col">{_h(c)}</th>' for c in cols)
    body = []
    for _, row in frame.iterrows():
        cells = "".join(f'<td{" class=num" if num[c] else ""}>{_cell_html(row[c])}</td>' for c in cols)
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{_h(caption)}</caption>" if caption else ""
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table></div>')


def _table_md(frame: pd.DataFrame) -> str:
    frame = frame.fillna("")
    cols = list(frame.columns)
    if not cols:
        return "(no rows)"
    lines = ["| " + " | ".join(_md(c) for c in cols) + " |",
             "|" + "|".join("--:" if _numeric(frame[c]) else ":--" for c in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell_md(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _table_requests(experiment: dict | None) -> tuple[list[dict], bool]:
    """[(table, metric)], and whether they were asked for (an experiment) or are the defaults."""
    declared = (experiment or {}).get("tables")
    if not declared:
        return [{"table": t, "metric": "map@all"} for t in DEFAULT_TABLES], False
    out = []
    for item in declared:
        if isinstance(item, dict):
            name = item.get("table", item.get("name"))
            out.append({"table": str(name), "metric": str(item.get("metric", "map@all"))})
        else:
            out.append({"table": str(item), "metric": "map@all"})
    return out, True


def _has_runs(t) -> bool:
    frame = t.frame
    if frame.empty:
        return False
    if "runs" in frame:
        return bool((pd.to_numeric(frame["runs"], errors="coerce").fillna(0) > 0).any())
    counts = [c for c in frame.columns if c.endswith("_n")]
    return bool(counts) and bool((frame[counts].fillna(0).to_numpy() > 0).any())


def _drop_unmatched(t):
    """Paper tables list every real-valued plugin; a row with neither a run of ours nor a published
    number says nothing, so it is left out (and counted in a note)."""
    if t.frame.empty or "paper_avg" not in t.frame:
        return t
    runs = pd.to_numeric(t.frame["runs"], errors="coerce").fillna(0)
    paper = t.frame[["paper_img2txt", "paper_txt2img", "paper_avg"]].notna().any(axis=1)
    keep = ((runs > 0) | paper | t.frame["status"].isin(["reference", "from labels"])).to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        t.frame = t.frame[keep].reset_index(drop=True)
        t.display = t.display[keep].reset_index(drop=True)
        t.notes = t.notes + [f"{dropped} row(s) with neither a run of ours nor a published number left out."]
    return t


def build_tables(results_dir: Path, dataset: str, root: Path | None = None, experiment: dict | None = None,
                 reference: Path | None = None):
    """[(request, Table or None, problem)]: what the report shows, in order."""
    from cmr_bench.report.tables import hash_table, paper_table

    requests, declared = _table_requests(experiment)
    out = []
    for req in requests:
        name, metric = req["table"], req["metric"]
        try:
            if name in PAPER_TABLES:
                t = _drop_unmatched(paper_table(name, dataset, results_dir, metric, root=root, reference=reference))
            elif name == "hash":
                t = hash_table(dataset, results_dir, metric, reference=reference)
            elif name == "djsrh-ablation":
                t = hash_table(dataset, results_dir, metric, variants=True, reference=reference)
            else:
                raise CmrBenchError(f"unknown table '{name}' (known: {', '.join(DEFAULT_TABLES)})")
        except CmrBenchError as exc:
            if declared:  # asked for: say why it is not there
                out.append((req, None, str(exc)))
            continue
        if not _has_runs(t):
            if declared:
                out.append((req, t, "No finished run of ours for this table yet; only what the table shows without them."))
            continue
        out.append((req, t, ""))
    return out


# --- runs: environment and methods -------------------------------------------------------

def _runs(results_dir: Path, dataset: str, reference: Path | None = None) -> list[tuple[Path, dict]]:
    from cmr_bench.report.results import stored_runs

    return [(folder, run) for folder, run, _ in stored_runs(results_dir, dataset, reference=reference)[0]]


def _env_value(env: dict, key: str) -> str:
    if key == "git":
        from cmr_bench.report.results import describe_commit

        return describe_commit(env.get("git")) or "not recorded (not a git checkout)"
    value = env.get(key)
    return "not recorded" if value is None else str(value)


def environment_rows(runs: list[tuple[Path, dict]]) -> tuple[pd.DataFrame, list[str]]:
    """One row per environment field: its values with their run counts; fields where runs
    disagree are flagged and listed."""
    rows, disagree = [], []
    for key, label in ENV_FIELDS:
        counts = Counter(_env_value(run.get("environment") or {}, key) for _, run in runs)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        values = "; ".join(f"{v} ({n} runs)" for v, n in ordered[:SHOWN_VALUES])
        if len(ordered) > SHOWN_VALUES:  # the full list follows the table (commits) or is in run.json
            rest = ordered[SHOWN_VALUES:]
            values += f"; {len(rest)} more values ({sum(n for _, n in rest)} runs)"
        if len(counts) > 1:
            disagree.append(label)
        rows.append({"Field": label, "Value": values if len(counts) > 1 else next(iter(counts), ""),
                     "Runs agree": "yes" if len(counts) <= 1 else f"no: {len(counts)} values"})
    return pd.DataFrame(rows), disagree


def commit_rows(runs: list[tuple[Path, dict]]) -> pd.DataFrame:
    """Which runs each code version made: commit, run count, methods."""
    groups = defaultdict(list)
    for _, run in runs:
        groups[_env_value(run.get("environment") or {}, "git")].append(run.get("spec", {}).get("method", "?"))
    rows = [{"git commit": c, "runs": len(m), "methods": ", ".join(sorted(set(m)))} for c, m in groups.items()]
    return pd.DataFrame(sorted(rows, key=lambda r: (-r["runs"], r["git commit"])))


def method_records(runs: list[tuple[Path, dict]]) -> list[dict]:
    """Per method with stored runs: its metadata (from the installed plugin, else from run.json),
    deviations, notes the runs recorded, and how its runs ended."""
    from cmr_bench.registry import all_methods

    plugins = all_methods()
    by_method = defaultdict(list)
    for folder, run in runs:
        by_method[run.get("spec", {}).get("method", "?")].append(run)
    records = []
    for name in sorted(by_method):
        mine = by_method[name]
        stored = next((r.get("method_info") for r in mine if isinstance(r.get("method_info"), dict)), {}) or {}
        cls = plugins.get(name)
        info = cls.info if cls is not None else None
        done = sum(r.get("status") == "done" for r in mine)
        reasons = sorted({str(r.get("reason", "")).strip() for r in mine if r.get("status") != "done" and r.get("reason")})
        notes = []
        for r in mine:
            for n in r.get("notes") or []:
                if isinstance(n, str) and n not in notes:
                    notes.append(n)
        recorded = {str(r.get("method_info", {}).get("status")) for r in mine if isinstance(r.get("method_info"), dict)} - {"None"}
        records.append({
            "name": name,
            "installed": cls is not None,
            "full_name": info.full_name if info else str(stored.get("full_name", name)),
            "paper": f"{info.paper} ({info.venue} {info.year})" if info else "",
            "code_url": (info.code_url or "") if info else "",
            "status": info.status if info else str(stored.get("status", "unknown")),
            "recorded_status": sorted(recorded),
            "supervision": info.supervision if info else "",
            "code_type": cls.code_type if cls is not None else str(stored.get("code_type", "")),
            "deviations": list(info.deviations) if info else [],
            "notes": notes,
            "runs_done": done,
            "runs_failed": len(mine) - done,
            "failure_reasons": reasons,
        })
    return records


# --- figures -----------------------------------------------------------------------------

def _table_files(out_dir: Path, experiment: dict, name: str) -> list[Path]:
    """An experiment's page lists the table files it wrote; a plain report every table file in the
    folder except report pages' Markdown (report.md, report-*.md)."""
    if isinstance(experiment.get("table_files"), list):
        return sorted(out_dir / f for f in set(experiment["table_files"]) if (out_dir / f).is_file())
    return sorted(p for p in out_dir.iterdir() if p.is_file() and p.suffix in (".csv", ".tex", ".md")
                  and not (p.name == "report.md" or p.name.startswith("report-") or p.name == f"{name}.md"))


def _usable_figure(path: Path, embed: bool) -> bool:
    """A regular file (not a link) of a sane size; to be embedded, also a PNG the suite wrote
    itself (its mark): a planted link to a secret or a stray file never goes into the page.
    A linked page only points at files beside it (figures committed before the mark existed)."""
    from cmr_bench.report.figures import FIGURE_MARK
    from cmr_bench.safe_io import MAX_FIGURE, check_regular, read_bytes

    try:
        if not embed:
            return bool(check_regular(path, "figure", MAX_FIGURE))
        data = read_bytes(path, "figure", MAX_FIGURE)
    except CmrBenchError:
        return False
    return data.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + FIGURE_MARK.encode() in data


def _figure_list(out_dir: Path, experiment: dict | None, embed: bool = True) -> list[tuple[Path, str]]:
    found = sorted(p for p in out_dir.glob("*.png") if _usable_figure(p, embed))
    ordered, seen = [], set()
    declared = experiment is not None and isinstance(experiment.get("figures"), list)
    for item in (experiment or {}).get("figures") or []:
        spec = item if isinstance(item, dict) else {"file": item}
        name = spec.get("file")
        if not isinstance(name, str):
            continue
        # a file name is that file; a stem without ".png" may stand for several (fig_pr -> fig_pr_real.png, ...)
        stem_only = not name.lower().endswith(".png")
        for p in found:
            if p not in seen and (p.name == name or (stem_only and (p.stem == name or p.stem.startswith(name + "_")))):
                ordered.append((p, str(spec.get("caption") or _caption(p))))
                seen.add(p)
    if declared:  # an experiment's page shows its own figures, not another experiment's in the same folder
        return ordered
    order = {pat: i for i, (pat, _) in enumerate(CAPTIONS)}
    rest = [p for p in found if p not in seen]
    natural = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]  # noqa: E731  16, 32, 64, 128 bits
    rest.sort(key=lambda p: (next((order[pat] for pat, _ in CAPTIONS if re.search(pat, p.stem)), len(CAPTIONS)), natural(p.name)))
    return ordered + [(p, _caption(p)) for p in rest]


def _caption(path: Path) -> str:
    """What the figure shows, from its file name: fig_pr_hash_64bits.png -> "...curves, protocol
    'hash', 64-bit codes (fig_pr_hash_64bits.png)"."""
    base = next((text for pat, text in CAPTIONS if re.search(pat, path.stem)), "Figure")
    prefix = re.match(r"^fig_(pr|precision_at_r)_", path.stem)  # group_path's names: fig_<kind>_<protocol>[_<bits>bits]
    what = re.fullmatch(r"(.+?)(?:_(\d+)bits)?", path.stem[prefix.end():]) if prefix else None
    if what:
        base += f", protocol '{what.group(1)}'" + (f", {what.group(2)}-bit codes" if what.group(2) else "")
    return f"{base} ({path.name})"


# --- the page ----------------------------------------------------------------------------

CSS = """
body{font-family:Georgia,'Times New Roman',serif;line-height:1.5;color:#1a1a1a;background:#fff;max-width:88rem;margin:0 auto;padding:1.5rem 2rem}
h1,h2,h3{font-family:Helvetica,Arial,sans-serif;line-height:1.25}
h1{font-size:1.8rem;margin-bottom:.3rem}h2{font-size:1.35rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.1rem;margin-top:1.6rem}
nav ol{columns:2;font-family:Helvetica,Arial,sans-serif;font-size:.95rem}
.scroll{overflow-x:auto;margin:.8rem 0}
table{border-collapse:collapse;font-family:Helvetica,Arial,sans-serif;font-size:.85rem}
caption{text-align:left;font-weight:bold;padding:.3rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #333;background:#f4f4f4}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
table.results td,table.results th{white-space:nowrap}
figure{margin:1.2rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444}
.notes{font-size:.88rem;color:#333}.warn{color:#8a4b00;font-weight:bold}
code{font-size:.9em;background:#f4f4f4;padding:0 .2em}
.meta{color:#555;font-size:.92rem}
@media print{body{max-width:none;padding:0}nav{display:none}}
"""


def _list_html(items, rich=False) -> str:
    f = _h_rich if rich else _h
    return "<ul>" + "".join(f"<li>{f(i)}</li>" for i in items) + "</ul>" if items else ""


def _list_md(items, rich=False) -> str:
    f = _md_note if rich else _md
    return "\n".join(f"- {f(i)}" for i in items)


FIGURE_MODES = ("embed", "link")


def shown_path(path: Path) -> str:
    """A path as a published page may show it: relative to the working folder when inside it,
    else its last part alone (a page is committed and shared; the maker's folders are no one's business)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (OSError, ValueError):
        return f".../{Path(path).name}"


def write_report(results_dir: Path, dataset: str, out_dir: Path, root: Path | None = None,
                 experiment: dict | None = None, name: str = "report", figures: str = "embed",
                 reference: Path | None = None) -> list[Path]:
    """Write out_dir/<name>.html and out_dir/<name>.md; returns both paths. figures="embed" puts
    each PNG into the page (one file to send around); "link" points at the PNG beside it (a
    small page to commit; still offline)."""
    from cmr_bench import __version__
    from cmr_bench.paths import check_component
    from cmr_bench.safe_io import MAX_FIGURE, make_folder, read_bytes, write_text

    if figures not in FIGURE_MODES:
        raise CmrBenchError(f"unknown figure mode '{figures}' (choose from: {', '.join(FIGURE_MODES)})")
    name = check_component(str(name), "report name")

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = _runs(results_dir, dataset, reference)
    if not runs:
        raise CmrBenchError(f"no stored runs of dataset '{dataset}' in {results_dir}: nothing to report "
                            f"(cmr-bench run --dataset {dataset} ... first)")
    if out_dir.exists() and not out_dir.is_dir():
        raise CmrBenchError(f"--out {out_dir} exists and is not a folder")
    make_folder(out_dir, "report folder")
    exp = experiment or {}
    title = str(exp.get("title") or (f"{exp['name']}: results on {dataset}" if exp.get("name") else f"Results on {dataset}"))
    sections: list[Section] = []

    # Tables: ours beside the published, with the marks the tables carry.
    sec = Section("Tables")
    built = build_tables(results_dir, dataset, root, experiment, reference)
    if not built:
        sec.html.append("<p>No table could be filled from the stored runs.</p>")
        sec.md.append("No table could be filled from the stored runs.")
    for req, t, problem in built:
        heading = t.title if t is not None else f"Table {req['table']}"
        if req["metric"] != "map@all" and t is not None:
            heading += f" ({req['metric']})"
        sec.html.append(f"<h3>{_h(heading)}</h3>")
        sec.md.append(f"### {_md(heading)}")
        if problem:
            text = problem if t is not None else f"Not shown: {problem}"
            sec.html.append(f'<p class="warn">{_h(text)}</p>')
            sec.md.append(f"**{_md(text)}**")
            if t is None:
                continue
        sec.html.append(_table_html(t.display, css="results") if not t.display.empty else "<p>(no rows)</p>")
        sec.html.append('<div class="notes">' + _list_html(t.notes, rich=True) + "</div>")
        sec.md += [_table_md(t.display), _list_md(t.notes, rich=True)]
    files = _table_files(out_dir, exp, name)
    if files:
        sec.html.append("<p class=meta>Table files beside this page: " +
                        ", ".join(f'<a href="{_h(quote(p.name))}">{_h(p.name)}</a>' for p in files) + "</p>")
        sec.md.append("Table files beside this page: " + ", ".join(f"[{_md(p.name)}]({quote(p.name)})" for p in files))
    sections.append(sec)

    # Figures: every PNG in out_dir (an experiment's: those it declares), embedded or linked (html), linked (md).
    sec = Section("Figures")
    figs = _figure_list(out_dir, experiment, embed=figures == "embed")
    if not figs:
        sec.html.append(f"<p>No figure files in this folder (make them with <code>cmr-bench plot pr --dataset {_h(dataset)} "
                        f"--out {_h(shown_path(out_dir))}/fig_pr.png</code> and <code>plot tsne</code>).</p>")
        sec.md.append("No figure files in this folder.")
    for path, caption in figs:
        if figures == "embed":
            src = "data:image/png;base64," + base64.b64encode(read_bytes(path, "figure", MAX_FIGURE)).decode("ascii")
        else:
            src = _h(quote(path.name))
        sec.html.append(f'<figure><img src="{src}" alt="{_h(caption)}">'
                        f"<figcaption>{_h(caption)}</figcaption></figure>")
        sec.md += [f"![{_md(caption)}]({quote(path.name)})", "", f"*{_md(caption)}*", ""]
    shown = {p.name for p, _ in figs}
    left_out = sorted(p.name for p in out_dir.glob("*.png") if p.name not in shown and not _usable_figure(p, figures == "embed"))
    if left_out:  # said aloud: an old or foreign PNG is not silently missing
        why = "not written by cmr-bench, or not a regular file" if figures == "embed" else "not a regular file"
        sec.html.append(f'<p class="meta">Left out ({why}): {_h(", ".join(left_out))}</p>')
        sec.md.append(f"Left out ({why}): {_md(', '.join(left_out))}")
    sections.append(sec)

    # Environment: what the runs recorded; disagreements said aloud.
    sec = Section("Environment")
    env, disagree = environment_rows(runs)
    finished = sorted(str(r.get("finished", "")) for _, r in runs if r.get("finished"))
    span = f" finished {finished[0]} to {finished[-1]}" if finished else ""
    lead = f"Recorded in the run.json of the {len(runs)} stored runs of '{dataset}'{span}."
    sec.html.append(f"<p>{_h(lead)}</p>")
    sec.md.append(_md(lead))
    if disagree:
        warn = (f"The runs disagree on {', '.join(disagree)}: they were made with different code or software; "
                "the counts say how many runs each value covers.")
        sec.html.append(f'<p class="warn">{_h(warn)}</p>')
        sec.md.append(f"**{_md(warn)}**")
    sec.html.append(_table_html(env, css="environment"))
    sec.md.append(_table_md(env))
    if "git commit" in disagree:
        sec.html.append("<h3>Runs by code version</h3>" + _table_html(commit_rows(runs), css="commits"))
        sec.md += ["### Runs by code version", _table_md(commit_rows(runs))]
    sections.append(sec)

    # Methods: metadata, status, deviations from the paper, what the runs recorded.
    sec = Section("Methods and their deviations from the papers")
    for rec in method_records(runs):
        from cmr_bench.registry import display_name

        shown = display_name(rec["name"])  # as the tables print it, with the plugin name to run it by
        head = (f"{shown} ({rec['name']})" if shown != rec["name"] else rec["name"]) + f": {rec['full_name']}"
        sec.html.append(f"<h3>{_h(head)}</h3>")
        sec.md.append(f"### {_md(head)}")
        facts = [f"Status: {rec['status']} ({STATUS_MEANING.get(rec['status'], 'unknown status')})"]
        if rec["recorded_status"] and rec["recorded_status"] != [rec["status"]]:
            facts.append(f"Status recorded by the runs: {', '.join(rec['recorded_status'])} (the plugin has changed since)")
        if rec["paper"]:
            facts.append(f"Paper: {rec['paper']}")
        if rec["code_url"]:
            facts.append(f"Official code: {rec['code_url']}")
        if rec["supervision"] or rec["code_type"]:
            facts.append(f"{rec['supervision'] or '?'}, {rec['code_type'] or '?'}-valued codes")
        facts.append(f"Stored runs: {rec['runs_done']} finished" + (f", {rec['runs_failed']} failed" if rec["runs_failed"] else ""))
        facts += [f"Failure: {r}" for r in rec["failure_reasons"]]
        if not rec["installed"]:
            facts.append("Plugin not installed here: metadata from run.json, deviations unknown")
        items = [_h(f) for f in facts]
        url = rec["code_url"]
        if re.match(r"https?://", url):  # a link to follow, not a resource the page loads
            items = [f'Official code: <a href="{_h(url)}">{_h(url)}</a>' if f == f"Official code: {url}" else i
                     for f, i in zip(facts, items)]
        sec.html.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
        sec.md.append(_list_md(facts))
        if rec["deviations"]:
            sec.html.append("<p><strong>Deviations from the paper / official code</strong></p>" + _list_html(rec["deviations"]))
            sec.md += ["**Deviations from the paper / official code**", _list_md(rec["deviations"])]
        elif rec["installed"]:
            sec.html.append("<p>No deviation from the paper declared.</p>")
            sec.md += ["No deviation from the paper declared.", ""]
        if rec["notes"]:
            sec.html.append("<p><strong>Recorded by the runs</strong></p>" + _list_html(rec["notes"]))
            sec.md += ["**Recorded by the runs**", _list_md(rec["notes"])]
    sections.append(sec)

    intro = [f"Generated by cmr-bench {__version__} from the stored runs in {shown_path(results_dir)} (dataset '{dataset}') "
             "and the figure files beside this page; nothing here is typed in by hand except the published numbers "
             "(results/published/)."]
    if exp.get("description"):
        intro.insert(0, str(exp["description"]))
    intro.insert(1 if exp.get("description") else 0, CONFIG_MEANING)
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_h(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{_h(title)}</h1>"] + [f'<p class="meta">{_h(p)}</p>' for p in intro]
    page.append('<nav><h2 id="contents">Contents</h2><ol>' + "".join(
        f'<li><a href="#{_slug(s.title)}">{_h(s.title)}</a></li>' for s in sections) + "</ol></nav>")
    for s in sections:
        page.append(f'<section><h2 id="{_slug(s.title)}">{_h(s.title)}</h2>')
        page += s.html
        page.append("</section>")
    page.append("</body></html>\n")

    md = [f"# {_md(title)}", ""] + [_md(p) + "\n" for p in intro] + ["## Contents", ""]
    md += [f"{i}. [{_md(s.title)}](#{_slug(s.title)})" for i, s in enumerate(sections, 1)] + [""]
    for s in sections:
        md += [f"## {_md(s.title)}", ""]
        for block in s.md:
            md += [block, ""] if block else [""]
    md_text = re.sub(r"\n{3,}", "\n\n", "\n".join(md)).rstrip() + "\n"

    written = []
    for filename, text in ((f"{name}.html", "\n".join(page)), (f"{name}.md", md_text)):
        written.append(write_text(out_dir / filename, text, "report file"))
    return written
