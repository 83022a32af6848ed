"""Adding a method, as a user would: the example plugin of docs/adding-a-method.md, installed
as its own package through the `cmr_bench.methods` entry point, shows up in `list methods`,
passes `check-plugin`, runs through `cmr-bench run` and appears in `cmr-bench table`; and the
skeleton `cmr-bench new-method` writes passes check-plugin as generated."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from cmr_bench import registry

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = Path(__file__).resolve().parent / "example_plugin"




@pytest.fixture
def fresh_registry():
    """Let the registry scan again (entry points, new modules); undo everything afterwards."""
    registry._load()
    saved = (dict(registry._REGISTRY), dict(registry._SOURCES))
    registry._loaded = False
    modules = set(sys.modules)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._SOURCES.clear()
    registry._SOURCES.update(saved[1])
    registry._loaded = True
    for name in set(sys.modules) - modules:
        if name.startswith(("cmr_example_plugin", "cmr_bench.methods.")) or name in ("my_hash",):
            sys.modules.pop(name, None)


@pytest.fixture
def installed(plugin_site, monkeypatch, fresh_registry):
    """The example package visible to this process, as if pip-installed into the environment."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def test_the_docs_show_the_packaged_example_verbatim():
    doc = (REPO / "docs" / "adding-a-method.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    code = (PLUGIN_SRC / "cmr_example_plugin" / "__init__.py").read_text()
    assert code in blocks
    assert len(code.splitlines()) <= 60  # "a few dozen lines"
    pyproject = (PLUGIN_SRC / "pyproject.toml").read_text()
    assert '[project.entry-points."cmr_bench.methods"]' in pyproject and '[project.entry-points."cmr_bench.methods"]' in doc
    assert 'example-linear = "cmr_example_plugin:ExampleLinear"' in pyproject


def test_installed_package_lists_checks_runs_and_appears_in_table_2(installed, run_cli, tmp_path):
    code, out, err = run_cli("list", "methods", "--json")
    assert code == 0, err
    listed = {m["name"]: m for m in json.loads(out)}
    assert listed["example-linear"]["source"] == "entry point cmr_example_plugin:ExampleLinear"
    assert listed["example-linear"]["family"] == "real"
    code, out, err = run_cli("list", "methods")
    assert "example-linear" in out and "Ridge projection onto labels" in out

    code, out, err = run_cli("check-plugin", "example-linear")
    assert code == 0 and "8 passed, 0 failed" in out, out + err

    results = tmp_path / "runs"
    code, out, err = run_cli("run", "--methods", "example-linear,cca", "--dataset", "synthetic", "--seeds", "0,1",
                             "--results-dir", results, "--no-progress")
    assert code == 0, out + err
    assert "example-linear" in out and "4 runs: 0 already finished, 4 to run" in out

    code, out, err = run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", results,
                             "--out", tmp_path / "t", "--format", "md,csv")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| example-linear"))
    # bold / † are the significance marks (report/significance.py)
    assert re.search(r"\| (\*\*)?0\.\d{3} ± 0\.\d{3}(\*\*| †)? \|", row) and re.search(r"\|\s+2 \|", row), row
    import pandas as pd

    df = pd.read_csv(tmp_path / "t" / "table2.csv")
    mine = df[df["method"] == "example-linear"].iloc[0]
    assert mine["runs"] == 2 and 0.3 < mine["avg"] <= 1.0  # supervised: well above the random floor
    code, out, err = run_cli("runs", "list", "--results-dir", results)
    assert code == 0 and out.count("example-linear") == 2


def test_new_method_in_a_checkout_passes_check_plugin_as_generated(run_cli, tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("new-method", "my-method")
    assert code == 0, err
    plugin, test = tmp_path / "methods" / "my_method.py", tmp_path / "tests" / "test_method_my_method.py"
    assert plugin.is_file() and test.is_file()
    assert "@register_method" in plugin.read_text() and "class MyMethod(Method)" in plugin.read_text()
    # what the registry does for methods/: import the module (the decorator registers it)
    spec = importlib.util.spec_from_file_location("cmr_bench.methods.my_method", plugin)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    code, out, err = run_cli("check-plugin", "my-method")
    assert code == 0 and "8 passed, 0 failed" in out, out + err
    code, out, err = run_cli("run", "--methods", "my-method", "--dataset", "synthetic", "--results-dir", tmp_path / "runs",
                             "--no-progress")
    assert code == 0 and "my-method" in out, out + err
    # the generated test runs the same checks
    namespace: dict = {}
    exec(compile(test.read_text(), str(test), "exec"), namespace)
    namespace["test_my_method_passes_the_conformance_checks"]()
    # refuses to overwrite, and refuses taken or malformed names
    code, _, err = run_cli("new-method", "my-method")
    assert code == 2 and "exists already" in err
    (tmp_path / "methods" / "taken.py").write_text("# someone's file\n")
    code, _, err = run_cli("new-method", "taken")
    assert code == 2 and "--force" in err and (tmp_path / "methods" / "taken.py").read_text() == "# someone's file\n"
    for bad, expected in (("cca", "exists already"), ("My_Method", "lower-case"), ("class", "keyword"), ("9lives", "lower-case")):
        code, _, err = run_cli("new-method", bad)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_new_method_binary_into_a_folder_passes_its_generated_test(run_cli, tmp_path, fresh_registry):
    out_dir = tmp_path / "pkg"
    code, out, err = run_cli("new-method", "my-hash", "--binary", "--out", out_dir)
    assert code == 0, err
    assert "@register_method" not in (out_dir / "my_hash.py").read_text()  # a package uses the entry point
    assert 'code_type = "binary"' in (out_dir / "my_hash.py").read_text()
    namespace: dict = {"__file__": str(out_dir / "test_my_hash.py")}
    exec(compile((out_dir / "test_my_hash.py").read_text(), str(out_dir / "test_my_hash.py"), "exec"), namespace)
    namespace["test_my_hash_passes_the_conformance_checks"]()
    code, _, err = run_cli("new-method", "other", "--out", out_dir / "my_hash.py")
    assert code == 2 and "not a folder" in err
    code, _, err = run_cli("new-method", "other", "--out", tmp_path / "nowhere" / "deeper")
    assert code == 0  # folders are created


def test_new_method_outside_a_checkout_asks_for_out(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("new-method", "my-method")
    assert code == 2 and "--out" in err and not (tmp_path / "methods").exists()


@pytest.mark.parametrize("binary", [False, True])
def test_new_method_torch_skeleton_passes_check_plugin_as_generated(run_cli, tmp_path, monkeypatch, fresh_registry, binary):
    """`new-method --torch` writes a deep method on the shared trainer: networks, encoder and
    loss only (no loop of its own), and it passes check-plugin and runs as generated."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("new-method", "my-deep", "--torch", *(["--binary"] if binary else []))
    assert code == 0, err
    plugin = tmp_path / "methods" / "my_deep.py"
    text = plugin.read_text()
    assert "class MyDeep(TorchMethod)" in text and "def fit" not in text and "for " not in text.split("class MyDeep")[1].split("def loss")[0]
    spec = importlib.util.spec_from_file_location("cmr_bench.methods.my_deep", plugin)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    code, out, err = run_cli("check-plugin", "my-deep")
    assert code == 0 and "8 passed, 0 failed" in out, out + err
    code, out, err = run_cli("run", "--methods", "my-deep", "--dataset", "synthetic", "--results-dir", tmp_path / "runs",
                             "--no-progress", "--set", "my-deep.iterations=20", *(["--bits", "16"] if binary else []))
    assert code == 0 and "my-deep" in out, out + err


def test_new_method_in_a_checkout_names_the_command_that_keeps_the_readme_test_green(run_cli, tmp_path, monkeypatch,
                                                                                      fresh_registry):
    """Issue 27.4: a new in-tree method makes the README methods table stale (tests/test_install.py);
    new-method says so and `list methods --update-readme` regenerates exactly that table."""
    from cmr_bench.commands.listing import README_END, README_START

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    original = (REPO / "README.md").read_text()
    (tmp_path / "README.md").write_text(original)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("new-method", "my-method")
    assert code == 0, err
    assert "cmr-bench list methods --update-readme" in out and "tests/test_install.py" in out
    spec = importlib.util.spec_from_file_location("cmr_bench.methods.my_method", tmp_path / "methods" / "my_method.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    code, out, err = run_cli("list", "methods", "--update-readme")
    assert code == 0, err
    text = (tmp_path / "README.md").read_text()
    code, table, err = run_cli("list", "methods", "--markdown")
    block = lambda t: t[t.index("\n", t.index(README_START)) + 1:t.index(README_END)]  # noqa: E731  as test_install reads it
    assert block(text).rstrip("\n") == table.rstrip("\n") and "| `my-method` |" in block(text)
    assert text.replace(block(text), "") == original.replace(block(original), "")  # nothing else touched
    (tmp_path / "NOTES.md").write_text("no table here\n")
    code, out, err = run_cli("list", "methods", "--update-readme", tmp_path / "NOTES.md")
    assert code == 2 and "no generated methods table" in err and len(err.strip().splitlines()) == 1
