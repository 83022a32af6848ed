"""`cmr-bench check-plugin NAME`: run the conformance checks against any registered plugin."""

from __future__ import annotations

ORDER = 55


def register(sub) -> None:
    p = sub.add_parser("check-plugin", help="run the conformance checks against a method plugin")
    p.add_argument("name")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=cmd_check)


def cmd_check(args) -> int:
    from cmr_bench.conformance import run_checks
    from cmr_bench.registry import get_method, method_source
    from cmr_bench.seeding import resolve_device

    cls = get_method(args.name)
    print(f"{args.name} ({method_source(args.name)})")
    results = run_checks(cls, device=resolve_device(args.device))
    for r in results:
        print(f"  {'PASS' if r.ok else 'FAIL'}  {r.name}" + (f": {r.detail}" if r.detail else ""))
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
