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
