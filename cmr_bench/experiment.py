"""Experiments as files: one TOML per reproducible experiment (experiments/, installed as
cmr_bench.experiments) declaring its grids of runs, its sweeps, and the tables and figures it
produces. `cmr-bench reproduce` reads one, runs what is missing and writes the outputs.

Every problem in a file (TOML syntax, an unknown key, an unknown method, variant, table or
figure, a sweep over a hyperparameter the method lacks) is a one-line CmrBenchError naming
the file, found before anything runs. Format: docs/experiments.md and the two
built-in files."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmr_bench.errors import CmrBenchError, UnknownNameError
from cmr_bench.runner.spec import CONFIG_SOURCES, RUN_SELECTIONS

TABLES = ("2", "3", "4", "5", "hash", "djsrh-ablation")
FIGURES = ("pr", "precision-at-r", "code-length", "sweep", "tsne")
METRICS = ("map@all", "map@50")
MAX_FILE_BYTES = 1 << 20
MAX_BITS = 4096  # as `run --bits`

_TOP_KEYS = {"name", "title", "description", "dataset", "report", "grids", "sweeps", "tables", "figures"}
_GRID_KEYS = {"name", "methods", "seeds", "variants", "bits", "protocol", "config", "set", "datasets"}
_SWEEP_KEYS = {"name", "method", "parameters", "values", "seeds", "variant", "protocol", "bits"}
_TABLE_KEYS = {"table", "metric", "name", "hide_missing"}
_FIGURE_KEYS = {"figure", "protocol", "bits", "metric", "sweep", "method", "name", "caption", "config"}


@dataclass(frozen=True)
class Grid:
    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: str  # as `run --variants` takes it: none, all, or a comma list
    bits: tuple[int, ...] | None
    protocol: str | None
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    # Only on these datasets (e.g. a tuned grid: tuned configurations are made per dataset); None: any.
    datasets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sweep:
    """One hyperparameter at a time over `values`, the others at their defaults."""

    name: str
    method: str
    parameters: tuple[str, ...]
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    variant: str
    protocol: str | None
    bits: int | None


@dataclass(frozen=True)
class Output:
    kind: str  # a table (TABLES) or a figure (FIGURES)
    options: dict[str, Any]


@dataclass
class Experiment:
    name: str
    title: str
    description: str
    path: Path
    dataset: str | None
    grids: list[Grid]
    sweeps: list[Sweep]
    tables: list[Output]
    figures: list[Output]
    raw: dict[str, Any]
    report: str = "report"  # file stem of the report: experiments sharing an --out folder name theirs apart

    def sweep(self, name: str) -> Sweep:
        for s in self.sweeps:
            if s.name == name:
                return s
        raise UnknownNameError(f"sweep of experiment '{self.name}'", name, [s.name for s in self.sweeps] or ["(none declared)"])


# --- finding files --------------------------------------------------------------------------


def builtin_folder() -> Path:
    """The installed experiments/ folder. An editable install made before the folder existed
    lacks the package mapping: then the checkout's folder beside the package is used."""
    from importlib import resources

    try:
        return Path(str(resources.files("cmr_bench.experiments")))
    except ModuleNotFoundError:
        import cmr_bench

        return Path(cmr_bench.__file__).resolve().parents[1] / "experiments"


def builtin_experiments() -> dict[str, Path]:
    folder = builtin_folder()
    try:
        return {p.stem: p for p in sorted(folder.glob("*.toml"))}
    except OSError:
        return {}


def find_experiment(name_or_path: str) -> Path:
    text = str(name_or_path)
    if "\x00" in text or len(text) > 4096 or not text.strip():
        raise CmrBenchError(f"invalid experiment name or path {text[:60]!a}")
    if text.endswith(".toml") or "/" in text or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise CmrBenchError(f"experiment file {text} does not exist")
        return path
    known = builtin_experiments()
    if text not in known:
        raise UnknownNameError("experiment", text, known or ["(none installed)"])
    return known[text]


def load_experiment(name_or_path: str) -> Experiment:
    """Read and check an experiment file: structure, names, and every method, variant,
    hyperparameter, table and figure it mentions."""
    import tomllib

    path = find_experiment(name_or_path)
    try:
        with open(path, "rb") as fh:
            blob = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CmrBenchError(f"experiment file {path}: cannot read it ({exc.strerror or exc})") from None
    if len(blob) > MAX_FILE_BYTES:
        raise CmrBenchError(f"experiment file {path}: larger than {MAX_FILE_BYTES >> 20} MB, not an experiment")
    try:
        raw = tomllib.loads(blob.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CmrBenchError(f"experiment file {path}: not valid TOML ({reason})") from None
    return _parse(raw, path)


# --- checking -------------------------------------------------------------------------------


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def error(self, where: str, message: str) -> CmrBenchError:
        return CmrBenchError(f"experiment file {self.path}: {where}: {message}")


def _keys(w: _Where, where: str, table, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(table, dict):
        raise w.error(where, f"expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(allowed))})"
        raise w.error(where, f"unknown key '{unknown[0]}'{hint}")
    for key in required:
        if key not in table:
            raise w.error(where, f"missing key '{key}'")
    return table


def _datasets(w, where, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise w.error(where, "datasets must be a non-empty list of dataset names")
    return tuple(value)


def _string(w, where, value, what) -> str:
    if not isinstance(value, str) or not value.strip():
        raise w.error(where, f"{what} must be a non-empty string")
    return value


def _name(w, where, value, what) -> str:
    from cmr_bench.paths import check_component

    try:
        return check_component(_string(w, where, value, what), what)
    except CmrBenchError as exc:
        raise w.error(where, str(exc)) from None


def _ints(w, where, value, what, minimum=0) -> tuple[int, ...]:
    """A list of integers, or a string like '0-4' / '0,1,2' (as `run --seeds` takes it)."""
    from cmr_bench.runner.values import int_list

    if isinstance(value, str):
        try:
            value = int_list(value, what, minimum=minimum)
        except CmrBenchError as exc:
            raise w.error(where, str(exc)) from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise w.error(where, f"{what} must be a list of integers or a range like \"0-4\"")
    if min(value) < minimum:
        raise w.error(where, f"{what} must be integers >= {minimum}")
    if max(value) >= 2**63:  # torch seeds are 64-bit signed; `run --seeds` refuses the same
        raise w.error(where, f"{what} must be below 2**63, got {max(value)}")
    return tuple(dict.fromkeys(value))


def _methods(w, where, value) -> tuple[str, ...]:
    from cmr_bench.registry import resolve_methods

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise w.error(where, "methods must be a list of method names")
    seen = [v.strip().lower() for v in value]
    twice = sorted({v for v in seen if seen.count(v) > 1})
    if twice:  # a list that says one thing twice was probably meant to say something else
        raise w.error(where, f"methods lists '{twice[0]}' more than once")
    from cmr_bench.registry import all_methods

    everything = [v for v in seen if any(ch in v for ch in "*?[") and set(fnmatch.filter(all_methods(), v)) == set(all_methods())]
    if everything:  # '*' also takes the methods kept out of 'all' (which says what the paper's set is)
        raise w.error(where, f"methods pattern '{everything[0]}' matches every registered method; write \"all\" or name them")
    try:
        return tuple(resolve_methods(",".join(value)))
    except CmrBenchError as exc:
        raise w.error(where, str(exc)) from None


def _variants(w, where, value, methods) -> str:
    from cmr_bench.registry import get_method

    if value in ("none", "all"):
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise w.error(where, "variants must be \"none\", \"all\" or a list of variant names")
    known = {v for m in methods for v in get_method(m).variants}
    for v in value:
        if "," in v:
            raise w.error(where, f"variant name {v!r} contains a comma")
        if v not in known:
            raise w.error(where, str(UnknownNameError("variant of " + ", ".join(methods), v, known or ["(no variants)"])))
    return ",".join(value)


def _config(w, where, value) -> str:
    if value not in CONFIG_SOURCES:
        raise w.error(where, f"config must be one of {', '.join(CONFIG_SOURCES)}, got {value!r}")
    return value


def _overrides(w, where, value, methods) -> dict[str, Any]:
    """`set = { key = value }` (every listed method with that key) or { "method.key" = value }."""
    from cmr_bench.registry import get_method

    if not isinstance(value, dict):
        raise w.error(where, "set must be a table of key = value")
    for key in value:
        target, _, name = key.rpartition(".")
        owners = [target] if target else list(methods)
        if target and target not in methods:
            raise w.error(where, f"set {key}: '{target}' is not one of this grid's methods")
        if not any(name in get_method(m).defaults for m in owners):
            raise w.error(where, f"set {key}: no method of this grid has a hyperparameter '{name}'")
        for m in owners:  # each value as the methods declare it, before any run
            _declared(w, where, get_method(m), name, value[key])
    return dict(value)


def _declared(w, where, cls, name, value) -> None:
    from cmr_bench.hparams import validate_config

    if name in cls.params:
        try:
            validate_config(cls, {name: value}, "set")
        except CmrBenchError as exc:
            raise w.error(where, str(exc)) from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse(raw: dict, path: Path) -> Experiment:
    from cmr_bench.registry import get_method

    w = _Where(path)
    _keys(w, "top level", raw, _TOP_KEYS, ("name",))
    name = _name(w, "name", raw["name"], "experiment name")
    title = raw.get("title", name)
    description = raw.get("description", "")
    for key, value in (("title", title), ("description", description)):
        if not isinstance(value, str):
            raise w.error(key, "must be a string")
    dataset = raw.get("dataset")
    if dataset is not None:
        _string(w, "dataset", dataset, "dataset")
    report = _name(w, "report", raw.get("report", "report"), "report file name")
    if report.lower().endswith((".html", ".md")):
        raise w.error("report", f"give the file name without its extension (\"{report.rsplit('.', 1)[0]}\")")
    for key in ("grids", "sweeps", "tables", "figures"):
        if not isinstance(raw.get(key, []), list):
            raise w.error(key, f"write [[{key}]] tables (an array of tables)")

    grids = []
    for i, g in enumerate(raw.get("grids", [])):
        where = f"grids[{i}]"
        _keys(w, where, g, _GRID_KEYS, ("methods",))
        gname = _string(w, where, g.get("name", f"grid{i + 1}"), "name")
        where = f"grid '{gname}'"
        methods = _methods(w, where, g["methods"])
        bits = _ints(w, where, g["bits"], "bits", minimum=1) if "bits" in g else None
        if bits and max(bits) > MAX_BITS:
            raise w.error(where, f"bits: at most {MAX_BITS}, got {max(bits)}")
        protocol = _name(w, where, g["protocol"], "protocol") if "protocol" in g else None
        grids.append(Grid(gname, methods, _ints(w, where, g.get("seeds", [0]), "seeds"),
                          _variants(w, where, g.get("variants", "none"), methods), bits, protocol,
                          _config(w, where, g.get("config", "default")), _overrides(w, where, g.get("set", {}), methods),
                          _datasets(w, where, g["datasets"]) if "datasets" in g else None))

    sweeps = []
    for i, s in enumerate(raw.get("sweeps", [])):
        where = f"sweeps[{i}]"
        _keys(w, where, s, _SWEEP_KEYS, ("name", "method", "parameters", "values"))
        sname = _name(w, where, s["name"], "sweep name")
        where = f"sweep '{sname}'"
        if sname in {x.name for x in sweeps}:
            raise w.error(where, "declared twice")
        method = _methods(w, where, [s["method"]]) if isinstance(s["method"], str) else None
        if not method or len(method) != 1:
            raise w.error(where, "method must name one method")
        cls = get_method(method[0])
        params = s["parameters"] if isinstance(s["parameters"], list) else [s["parameters"]]
        if not params or not all(isinstance(p, str) for p in params):
            raise w.error(where, "parameters must be a list of hyperparameter names")
        for p in params:
            if p not in cls.defaults:
                raise w.error(where, str(UnknownNameError(f"hyperparameter of method '{cls.name}'", p, cls.defaults)))
            default = cls.defaults[p]
            if not _number(default):
                raise w.error(where, f"{cls.name}.{p} is not numeric (default {default!r}); a sweep needs a number")
        values = s["values"]
        if not isinstance(values, list) or not values or not all(_number(v) for v in values):
            raise w.error(where, "values must be a non-empty list of finite numbers")
        for p in params:
            for v in values:
                _declared(w, where, cls, p, v)
        variant = s.get("variant", "")
        if variant and variant not in cls.variants:
            raise w.error(where, str(UnknownNameError(f"variant of method '{cls.name}'", str(variant), cls.variants or ["(no variants)"])))
        bits = s.get("bits")
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS):
            raise w.error(where, "bits must be one positive integer")
        if cls.code_type == "binary" and bits is None:
            raise w.error(where, f"{cls.name} makes binary codes: give the code length (bits = 64)")
        protocol = _name(w, where, s["protocol"], "protocol") if "protocol" in s else None
        sweeps.append(Sweep(sname, cls.name, tuple(dict.fromkeys(params)), tuple(dict.fromkeys(values)),
                            _ints(w, where, s.get("seeds", [0]), "seeds"), variant, protocol, bits))

    tables = []
    for i, t in enumerate(raw.get("tables", [])):
        where = f"tables[{i}]"
        _keys(w, where, t, _TABLE_KEYS, ("table",))
        kind = str(t["table"]) if isinstance(t["table"], (str, int)) and not isinstance(t["table"], bool) else None
        if kind not in TABLES:
            raise w.error(where, str(UnknownNameError("table", str(t["table"]), TABLES)))
        metric = t.get("metric", "map@all")
        if metric not in METRICS:
            raise w.error(where, f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        options = {"metric": metric, "hide_missing": bool(t.get("hide_missing", False))}
        if not isinstance(t.get("hide_missing", False), bool):
            raise w.error(where, "hide_missing must be true or false")
        if "name" in t:
            options["name"] = _name(w, where, t["name"], "table file name")
        tables.append(Output(kind, options))

    figures = []
    for i, f in enumerate(raw.get("figures", [])):
        where = f"figures[{i}]"
        _keys(w, where, f, _FIGURE_KEYS, ("figure",))
        kind = f["figure"]
        if kind not in FIGURES:
            raise w.error(where, str(UnknownNameError("figure", str(kind), FIGURES)))
        options: dict[str, Any] = {}
        if "protocol" in f:
            options["protocol"] = _name(w, where, f["protocol"], "protocol")
        if "bits" in f:
            if isinstance(f["bits"], bool) or not isinstance(f["bits"], int) or not 1 <= f["bits"] <= MAX_BITS:
                raise w.error(where, "bits must be one positive integer")
            options["bits"] = f["bits"]
        if "metric" in f:
            if f["metric"] not in METRICS:
                raise w.error(where, f"metric must be one of {', '.join(METRICS)}, got {f['metric']!r}")
            options["metric"] = f["metric"]
        if "config" in f:  # curve figures: all runs, or only the default / tuned ones
            if kind not in ("pr", "precision-at-r") or f["config"] not in RUN_SELECTIONS:
                raise w.error(where, f"config applies to the pr and precision-at-r figures and is one of {', '.join(RUN_SELECTIONS)}")
            options["config"] = f["config"]
        if "name" in f:
            options["name"] = _name(w, where, f["name"], "figure file name")
        if "caption" in f:
            options["caption"] = _string(w, where, f["caption"], "caption")
        if kind == "sweep":
            if "sweep" not in f:
                raise w.error(where, "a sweep figure names its sweep (sweep = \"...\")")
            if f["sweep"] not in {s.name for s in sweeps}:
                raise w.error(where, str(UnknownNameError("sweep", str(f["sweep"]), [s.name for s in sweeps] or ["(none declared)"])))
            options["sweep"] = f["sweep"]
        elif "sweep" in f:
            raise w.error(where, f"'sweep' applies only to sweep figures, not {kind}")
        if kind == "tsne":
            options["method"] = _methods(w, where, [f.get("method", "sdcmr")])[0]
        elif "method" in f:
            raise w.error(where, f"'method' applies only to tsne figures, not {kind}")
        figures.append(Output(kind, options))

    if not grids and not sweeps and not tables and not figures:
        raise w.error("top level", "declares nothing (no [[grids]], [[sweeps]], [[tables]] or [[figures]])")
    return Experiment(name, title, description, Path(path), dataset, grids, sweeps, tables, figures, raw, report)


# --- runs -----------------------------------------------------------------------------------


def _config_source(config: str, where: str, tuned_dir) -> dict[str, Any]:
    """expand()'s keywords for a grid's config: tuned configs come from `cmr-bench tune`, read
    by the runner (`run --config tuned`); a runner without them is refused, never replaced by
    the defaults under the tuned name."""
    if config == "default":
        return {}
    import inspect

    from cmr_bench.runner.grid import expand

    if "config_source" not in inspect.signature(expand).parameters:
        raise CmrBenchError(f"{where}: config \"tuned\" needs the runner's tuned configurations "
                            "(`run --config tuned`), which this version does not have; use config = \"default\"")
    return {"config_source": "tuned", "tuned_dir": tuned_dir}


def grid_specs(g: Grid, dataset, tuned_dir=None, max_runs: int | None = None) -> list:
    from cmr_bench.runner.grid import expand

    source = _config_source(g.config, f"grid '{g.name}'", tuned_dir)
    try:
        return expand(list(g.methods), dataset, list(g.seeds), g.protocol, list(g.bits) if g.bits else None,
                      g.variants, dict(g.overrides), max_runs=max_runs, **source)
    except CmrBenchError as exc:
        raise CmrBenchError(f"grid '{g.name}': {exc}") from None


def sweep_specs(s: Sweep, dataset, max_runs: int | None = None) -> list:
    """One run per (parameter, value, seed), around the method's defaults. A value equal to
    the default is the default run itself (same config hash), not a second run under a --set
    folder."""
    from cmr_bench.runner.grid import expand

    variants = s.variant or "none"
    bits = [s.bits] if s.bits else None

    def mine(specs):
        return [sp for sp in specs if sp.variant == s.variant]

    try:
        base = {(sp.bits, sp.seed): sp for sp in mine(expand([s.method], dataset, list(s.seeds), s.protocol, bits, variants, max_runs=max_runs))}
        out = []
        for param in s.parameters:
            for value in s.values:
                for sp in mine(expand([s.method], dataset, list(s.seeds), s.protocol, bits, variants, {f"{s.method}.{param}": value},
                                       max_runs=max_runs)):
                    default = base[(sp.bits, sp.seed)]
                    out.append(default if sp.config == default.config else sp)
        return out
    except CmrBenchError as exc:
        raise CmrBenchError(f"sweep '{s.name}': {exc}") from None


def count_experiment_runs(exp: Experiment) -> int:
    """An upper bound on the experiment's runs (shared runs counted once per grid), without expanding."""
    from cmr_bench.runner.grid import count_runs

    total = sum(count_runs(list(g.methods), list(g.seeds), list(g.bits) if g.bits else None, g.variants) for g in exp.grids)
    for s in exp.sweeps:
        one = count_runs([s.method], list(s.seeds), [s.bits] if s.bits else None, s.variant or "none")
        total += one * (1 + len(s.parameters) * len(s.values))
    return total


def experiment_specs(exp: Experiment, dataset, runs_dir: Path, tuned_dir=None, max_runs: int | None = None) -> list:
    """Every run of the experiment, each once (grids share runs: Table III's default SDCMR is
    also Table II's), in declaration order. Counted before anything is expanded: more than
    `max_runs` (default runner.grid.MAX_RUNS) is one line."""
    from cmr_bench.runner.grid import check_grid_size

    total = count_experiment_runs(exp)
    check_grid_size(total, max_runs, f"experiment {exp.name}")
    seen: dict[Path, Any] = {}
    for g in exp.grids:
        if g.datasets is not None and dataset.name not in g.datasets:
            continue  # e.g. tuned configurations exist for these datasets only
        for sp in grid_specs(g, dataset, tuned_dir, max_runs=total):
            seen.setdefault(sp.folder(runs_dir), sp)
    for s in exp.sweeps:
        for sp in sweep_specs(s, dataset, max_runs=total):
            seen.setdefault(sp.folder(runs_dir), sp)
    return list(seen.values())
