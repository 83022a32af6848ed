"""`cmr-bench compare A B`: is A's difference from B real? Paired tests on per-query AP."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 35


def register(sub) -> None:
    from cmr_bench.commands._common import DATASET_HELP, RESULTS_HELP
    from cmr_bench.report.significance import BOOTSTRAP_SEED, PERMUTATIONS, RESAMPLES

    p = sub.add_parser("compare", help="paired comparison of two methods' stored runs: mAP difference, 95%% CI, one-sided p each way, wins")
    p.add_argument("a", metavar="A", help="method, or method[variant], as in tables")
    p.add_argument("b", metavar="B", help="the method it is compared with")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--protocol", default=None, help="protocol of the runs (default: the one both methods were run with)")
    p.add_argument("--bits", type=int, default=None, help="code length (hashing methods run at several)")
    p.add_argument("--results-dir", default=str(Path("results") / "runs"), help=RESULTS_HELP)
    p.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    p.add_argument("--permutations", type=int, default=PERMUTATIONS, help=f"sign flips of the permutation test (default {PERMUTATIONS})")
    p.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help=f"bootstrap and sign-flip seed (default {BOOTSTRAP_SEED})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from cmr_bench.commands._common import add_reference_args

    add_reference_args(p)
    p.set_defaults(handler=cmd_compare)


def _runs_of(runs, key: str, bits: int | None, protocol: str | None):
    import pandas as pd

    mine = runs[(runs["key"] == key) & (runs["status"] == "done")] if not runs.empty else runs
    if mine.empty:
        where = f" under protocol '{protocol}'" if protocol else ""
        raise CmrBenchError(f"no finished runs of '{key}'{where} in this results dir (see `cmr-bench runs list`)")
    if protocol is None:
        found = sorted(set(mine["protocol"]))
        if len(found) > 1:
            raise CmrBenchError(f"'{key}' was run under protocols {', '.join(found)}: pick one with --protocol")
    else:
        mine = mine[mine["protocol"] == protocol]
        if mine.empty:
            raise CmrBenchError(f"no finished runs of '{key}' under protocol '{protocol}'")
    present = sorted({int(b) for b in mine["bits"].dropna()})
    if bits is None and len(present) > 1:
        raise CmrBenchError(f"'{key}' was run at {', '.join(map(str, present))} bits: pick one with --bits")
    if bits is not None:
        mine = mine[mine["bits"].fillna(-1).astype(int) == bits] if present else mine.iloc[0:0]
        if mine.empty:
            raise CmrBenchError(f"no finished runs of '{key}' at {bits} bits (has: {', '.join(map(str, present)) or 'no code length'})")
    return mine if isinstance(mine, pd.DataFrame) else pd.DataFrame(mine)


def cmd_compare(args) -> int:
    import json

    from cmr_bench.commands._common import dataset_name, print_table, reference_of
    from cmr_bench.report.results import collect
    from cmr_bench.report.significance import compare, per_query_ap

    if args.resamples < 1:
        raise CmrBenchError(f"--resamples must be >= 1, got {args.resamples}")
    if args.permutations < 1:
        raise CmrBenchError(f"--permutations must be >= 1, got {args.permutations}")
    if args.a == args.b:
        raise CmrBenchError(f"compare needs two different entries, got '{args.a}' twice")
    from cmr_bench.errors import UnknownNameError
    from cmr_bench.registry import all_methods

    known = all_methods()
    for entry in (args.a, args.b):  # a typo gets the suggestion `run` gives, not "no finished runs"
        base = entry.split("[")[0].split(" ")[0]
        if base not in known:
            raise UnknownNameError("method", base, known)
    dataset = dataset_name(args)
    runs = collect(Path(args.results_dir), dataset, protocol=args.protocol, reference=reference_of(args))
    if not runs.empty:  # the store's layout: <runs>/<dataset>/<protocol>/<method>/<config>/seed-k
        runs["protocol"] = [Path(f).parts[-4] for f in runs["folder"]]
    a = _runs_of(runs, args.a, args.bits, args.protocol)
    b = _runs_of(runs, args.b, args.bits, args.protocol)
    pa, pb = set(a["protocol"]), set(b["protocol"])
    if pa != pb:
        raise CmrBenchError(f"'{args.a}' ran under {', '.join(sorted(pa))}, '{args.b}' under {', '.join(sorted(pb))}: "
                            "a paired comparison needs the same protocol (--protocol)")
    rows, out = [], {"a": args.a, "b": args.b, "dataset": dataset, "protocol": sorted(pa)[0], "bits": args.bits,
                     "seeds_a": len(a), "seeds_b": len(b), "resamples": args.resamples, "permutations": args.permutations, "bootstrap_seed": args.seed,
                     "directions": {}}
    for direction, label in (("i2t", "Img2Txt"), ("t2i", "Txt2Img")):
        c = compare(per_query_ap(list(a["folder"]), direction), per_query_ap(list(b["folder"]), direction),
                    args.resamples, args.seed, flips=args.permutations)
        out["directions"][direction] = {"n_queries": c.n, "map_a": c.mean_a, "map_b": c.mean_b, "diff": c.diff,
                                        "ci_low": c.ci[0], "ci_high": c.ci[1], "p_a_greater": c.p_greater, "p_b_greater": c.p_less,
                                        "wins_a": c.wins_a, "wins_b": c.wins_b, "ties": c.ties}
        rows.append({"direction": label, f"mAP {args.a}": f"{c.mean_a:.4f}", f"mAP {args.b}": f"{c.mean_b:.4f}",
                     "A - B": f"{c.diff:+.4f}", "95% CI": f"[{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]", "p (A > B)": f"{c.p_greater:.3g}", "p (B > A)": f"{c.p_less:.3g}",
                     "A wins": c.wins_a, "B wins": c.wins_b, "ties": c.ties, "queries": c.n})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.a} (A, {len(a)} runs) vs {args.b} (B, {len(b)} runs) on {dataset}, protocol {out['protocol']}"
          + (f", {args.bits} bits" if args.bits else "") + ": per-query AP averaged over seeds")
    print_table(rows)
    print(f"95% CI: paired bootstrap over queries ({args.resamples} resamples, seed {args.seed}); p: one-sided paired "
          f"sign-flip permutation test of the mAP difference ({args.permutations} flips, seed {args.seed}), each direction "
          "a single test, not corrected for multiple comparisons; wins: queries where one AP is higher.")
    return 0
