"""Benchmarks are opt-in: `pytest benchmarks/ --benchmark-enable -p no:cacheprovider`.

Files named bench_*.py are collected here (the test suite's testpaths do not include this
folder). Each benchmark records its ratios; a table of them is printed at the end.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    # Collect bench_*.py when the folder is given (`pytest benchmarks/`); a file named on the
    # command line is already collected by pytest itself, so it is not collected twice.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not _named_on_command_line(file_path, parent):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _named_on_command_line(file_path, parent) -> bool:
    from pathlib import Path

    args = parent.config.invocation_params.args
    return any(Path(a.split("::")[0]).resolve() == file_path.resolve() for a in args if not a.startswith("-"))


def pytest_collection_modifyitems(config, items):
    # pytest 9.2 dropped the private Node._nodeid that pytest-benchmark (<= 5.3) reads when it
    # builds the `benchmark` fixture (ionelmc/pytest-benchmark#321): alias the public id.
    for item in items:
        if not hasattr(item, "_nodeid"):
            item._nodeid = item.nodeid


def pytest_configure(config):
    config._cmr_bench_rows = []


@pytest.fixture
def report(request):
    """Append a dict of numbers to the end-of-run table."""
    return request.config._cmr_bench_rows.append


def pytest_terminal_summary(terminalreporter, config):
    rows = getattr(config, "_cmr_bench_rows", [])
    if not rows:
        return
    from tabulate import tabulate

    terminalreporter.section("cmr-bench evaluator: measured ratios")
    headers = sorted({k for row in rows for k in row}, key=lambda k: (k != "case", k))
    terminalreporter.write_line(tabulate([[row.get(h, "") for h in headers] for row in rows], headers=headers,
                                         tablefmt="simple", floatfmt=".3g"))
