"""Helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys



def root_of(args):
    from cmr_bench.data.root import data_root

    return data_root(getattr(args, "data_root", None))


def print_json(data) -> None:
    from cmr_bench.runner.store import json_default

    def default(o):
        try:
            return json_default(o)
        except TypeError:
            return str(o)  # printing must not fail on an odd value

    json.dump(data, sys.stdout, indent=2, default=default)
    sys.stdout.write("\n")


def print_table(rows: list[dict], headers: list[str] | None = None) -> None:
    from tabulate import tabulate

    print(tabulate(rows, headers="keys" if headers is None else headers, tablefmt="simple"))


def dataset_name(args) -> str:
    """--dataset as `run` takes it: a dataset name, or a path to a manifest .toml (whose
    `name` is the store's folder). A name needs no manifest: stored runs of a dataset whose
    manifest is gone can still be read."""
    from pathlib import Path

    from cmr_bench.paths import check_component

    text = str(args.dataset)
    if text.endswith(".toml") or "/" in text or Path(text).is_file():
        from cmr_bench.data.manifest import find_manifest

        return find_manifest(text, root_of(args)).name
    return check_component(text, "--dataset")


def user_output(args, dataset: str):
    """Where a command's tables and figures go: --out, else <results-dir>/_out/<dataset>/ (a
    user's own folder: the committed reference tables in results/<dataset>/ are never written)."""
    return default_output(args.results_dir, dataset)


def default_output(results_dir, dataset: str):
    """<results-dir>/_out/<dataset>, refused when `_out` or `_out/<dataset>` is a symlink (a
    store received from someone else must not send our tables and report outside it)."""
    from pathlib import Path

    from cmr_bench.safe_io import refuse_link

    out = Path(results_dir) / OUT_FOLDER
    refuse_link(out, "output folder")
    refuse_link(out / dataset, "output folder")
    return out / dataset


OUT_FOLDER = "_out"  # cannot be a dataset name (names start with a letter or digit)
DATASET_HELP = "dataset name or path to a manifest .toml (as for `run`)"
RESULTS_HELP = "run store (default results/runs)"


def add_reference_args(p) -> None:
    """--reference / --no-reference: the committed archive of reference runs (runner/archive.py)."""
    from cmr_bench.report.results import DEFAULT_REFERENCE

    p.add_argument("--reference", default=str(DEFAULT_REFERENCE), metavar="DIR",
                   help=f"archive of reference runs whose rows fill in for entries without a finished run in --results-dir "
                        f"(default {DEFAULT_REFERENCE}; none there: your runs alone)")
    p.add_argument("--no-reference", action="store_true", help="your runs alone: leave the reference archive out")


def reference_of(args):
    """None with --no-reference; the default folder may be absent (your runs alone), a named one not."""
    from pathlib import Path

    from cmr_bench.errors import CmrBenchError
    from cmr_bench.report.results import DEFAULT_REFERENCE

    if args.no_reference:
        return None
    folder = Path(args.reference)
    if folder != DEFAULT_REFERENCE and not folder.is_dir():
        raise CmrBenchError(f"--reference {folder}: no such folder (the default {DEFAULT_REFERENCE} may be absent; "
                            "--no-reference leaves the archive out)")
    return folder
