"""The module import graph of cmr_bench (issue 29): no cycle, and no import from a lower layer to
a higher one. Imports are read from the source (ast), those inside functions included, so a lazy
import cannot hide a dependency. The layers are documented in docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Package folders as installed (setup.cfg package_dir): the built-in plugins live in methods/.
SOURCES = {"cmr_bench": REPO / "cmr_bench", "cmr_bench.methods": REPO / "methods"}

# Lowest first. A module may import its own layer and those below, never one above. A package
# covers its submodules (the longest match wins), except the root `cmr_bench`, which is only itself:
# a new top-level module must be placed here explicitly.
LAYERS = [
    ("foundation", ["cmr_bench.errors", "cmr_bench.paths", "cmr_bench.seeding", "cmr_bench.hooks", "cmr_bench.safe_io"]),
    # the package root: __version__ and a lazy facade over load_dataset / evaluate
    ("data and evaluation", ["cmr_bench", "cmr_bench.data", "cmr_bench.features", "cmr_bench.evaluation"]),
    ("methods", ["cmr_bench.plugin", "cmr_bench.hparams", "cmr_bench.trainer", "cmr_bench.registry",
                 "cmr_bench.conformance", "cmr_bench.methods"]),
    ("runner", ["cmr_bench.runner"]),
    ("tuning and experiments", ["cmr_bench.tuning", "cmr_bench.experiment"]),
    ("report", ["cmr_bench.report"]),
    ("commands", ["cmr_bench.commands", "cmr_bench.cli"]),
]

# Imports allowed against the layering: none (experiment.py's CLI parsers moved to runner/values.py).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imported(node: ast.AST, module: str, is_package: bool, known: dict) -> list[str]:
    """The modules of cmr_bench an import statement names: `from X import y` names X.y when that
    is a module, else X (the implicit import of parent packages is not an edge)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return []
    out = []
    for name in targets:
        while name and name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = module_files()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {t for node in ast.walk(tree) for t in imported(node, module, path.name == "__init__.py", known)}
    return graph


def layer_of(module: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (prefix != "cmr_bench" and module.startswith(prefix + "."))
            if covers and len(prefix) > best:
                best, level = len(prefix), i
    if level is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and in docs/architecture.md")
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_every_module_and_sees_lazy_imports():
    graph = import_graph()
    assert {"cmr_bench.cli", "cmr_bench.runner.grid", "cmr_bench.trainer", "cmr_bench.methods.sdcmr"} <= set(graph)
    assert "cmr_bench.evaluation" in graph["cmr_bench.trainer"]  # imported inside validation_map
    assert "cmr_bench.runner.lock" in graph["cmr_bench.runner.store"]


def test_the_module_import_graph_has_no_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_from_a_higher_layer():
    graph = import_graph()
    upward = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                    for a, targets in graph.items() for b in targets
                    if layer_of(b) > layer_of(a) and (a, b) not in KNOWN_UPWARD)
    assert not upward, "imports against the layering (docs/architecture.md):\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("import cmr_bench.runner.store", {"cmr_bench.runner.store"}),
    ("from cmr_bench.runner import store", {"cmr_bench.runner.store"}),
    ("from cmr_bench.runner.store import validate_run", {"cmr_bench.runner.store"}),
    ("def f():\n    from . import lock", {"cmr_bench.runner.lock"}),
    ("from ..errors import CmrBenchError", {"cmr_bench.errors"}),
])
def test_imports_are_resolved_to_modules(source, expected):
    known = module_files()
    tree = ast.parse(source)
    found = {t for node in ast.walk(tree) for t in imported(node, "cmr_bench.runner.grid", False, known)}
    assert found == expected


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("cmr_bench.runner.store") > layer_of("cmr_bench.trainer") > layer_of("cmr_bench.data.loader")
    assert layer_of("cmr_bench.runner.tuned") == layer_of("cmr_bench.runner")  # a package covers its modules
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("cmr_bench.newmodule")  # the root package covers only itself
