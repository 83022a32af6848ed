"""`cmr-bench list datasets|methods [--json]`."""

from __future__ import annotations

from cmr_bench.commands._common import print_json, print_table, root_of
from cmr_bench.plugin import STATUS_MEANING  # one status vocabulary, defined once

ORDER = 5


def register(sub) -> None:
    parser = sub.add_parser("list", help="list datasets or methods")
    parser.add_argument("what", choices=["datasets", "methods"], help="datasets (with their state under the data root) or methods")
    parser.add_argument("--json", action="store_true", help="machine-readable output (every field)")
    parser.add_argument("--markdown", action="store_true", help="methods: the README's table of the built-in methods, generated from each MethodInfo")
    parser.set_defaults(handler=cmd_list)


def cmd_list(args) -> int:
    if args.what == "datasets":
        from cmr_bench.data.loader import dataset_state
        from cmr_bench.data.manifest import all_manifests

        root = root_of(args)
        rows = [{"name": n, "title": m.title, "label_kind": m.label_kind, "num_classes": m.num_classes,
                 "state": dataset_state(m, root), "protocols": list(m.protocols)} for n, m in all_manifests(root).items()]
        if args.json:
            print_json(rows)
        else:
            print_table([{**r, "protocols": ", ".join(r["protocols"])} for r in rows])
        return 0
    from cmr_bench.registry import all_methods, method_source

    rows = []
    for name, cls in all_methods().items():
        info = cls.info
        rows.append({"name": name, "family": cls.code_type, "paper": f"{info.full_name} ({info.venue} {info.year})",
                     "status": info.status, "supervision": info.supervision, "in_all": cls.in_all,
                     "variants": list(cls.variants), "source": method_source(name)})
    if args.json:
        print_json(rows)
    elif args.markdown:
        print(methods_markdown([r for r in rows if r["source"].startswith("cmr_bench.methods")]))
    else:
        print_table([{k: r[k] for k in ("name", "family", "paper", "status", "supervision")} for r in rows])
    return 0


def methods_markdown(rows: list[dict]) -> str:
    """The README's methods table: one row per registered method, straight from its MethodInfo."""
    lines = ["| name | family | paper | status | supervision | in `--methods all` |", "|---|---|---|---|---|---|"]
    for r in rows:
        variants = f", + {len(r['variants'])} variants" if r["variants"] else ""
        lines.append(f"| `{r['name']}` | {r['family']} | {r['paper']}{variants} | {r['status']} | {r['supervision']} | "
                     f"{'yes' if r['in_all'] else 'no'} |")
    lines.append("")
    lines.append("Status: " + "; ".join(f"**{k}**: {v}" for k, v in STATUS_MEANING.items()) + ".")
    return "\n".join(lines)
