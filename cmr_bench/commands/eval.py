"""`cmr-bench eval`: evaluate saved codes (.npy / .npz) with the evaluator."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from cmr_bench.errors import EvaluationInputError

ORDER = 40


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate retrieval codes: mAP@all, mAP@k, P@R, PR curve",
        description="Evaluate query codes against retrieval codes (files: .npy, or .npz holding one array). "
        "Conventions: docs/evaluation.md.",
    )
    p.add_argument("--query", required=True, metavar="Q.npy", help="query codes, n_q x d")
    p.add_argument("--retrieval", required=True, metavar="R.npy", help="retrieval codes, n_r x d")
    p.add_argument("--query-labels", required=True, metavar="QL.npy", help="1-D class ids or 2-D multi-hot")
    p.add_argument("--retrieval-labels", required=True, metavar="RL.npy", help="same kind as --query-labels")
    p.add_argument("--similarity", default="cosine", metavar="{cosine,hamming,euclidean}", help="cosine (default), hamming (binary codes) or euclidean")
    p.add_argument("--k", nargs="+", default=None, metavar="K", help="cut-offs for map@k (default 50)")
    p.add_argument("--r", nargs="+", default=[], metavar="R", help="cut-offs for p@R (precision among the top R)")
    p.add_argument("--ties", default="average", metavar="{average,stable}", help="average (default: expected value over tie orders) or stable")
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--map-k-denominator", default="found", metavar="{found,trec}", help="found (default: relevant items in the top k) or trec (min(k, R))")
    p.add_argument("--zero-relevant", default="count", metavar="{count,exclude}", help="count (default: such queries score 0) or exclude")
    p.add_argument("--memory-budget-mb", default=None, metavar="MB",
                   help="working memory per chunk of queries (default 512; on a GPU half its free memory)")
    p.add_argument("--pr-points", default="11", metavar="N", help="recall levels of the real-valued PR curve (default 11)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--profile", action="store_true",
                   help="also time the similarity/distance matrix alone and print the ratio to stderr")
    p.set_defaults(handler=cmd_eval)


def _ints(values, flag: str) -> list[int]:
    out = []
    for v in values:
        try:
            n = int(v)
        except ValueError:
            raise EvaluationInputError(f"{flag}: expected positive integers, got '{v}'") from None
        if n < 1:
            raise EvaluationInputError(f"{flag}: expected positive integers, got '{v}'")
        out.append(n)
    return out


MAX_PR_POINTS = 100_000


def _number(text: str, flag: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise EvaluationInputError(f"{flag}: expected a number, got '{text}'") from None


def load_array(path: str, what: str) -> np.ndarray:
    """A .npy file, or a .npz file holding exactly one array."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationInputError(f"{what}: no such file: {path}")
    try:
        obj = np.load(p, allow_pickle=False)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EvaluationInputError(f"{what}: cannot read {path} as .npy/.npz ({reason})") from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            names = list(obj.files)
            if len(names) != 1:
                listed = ", ".join(names) if names else "none"
                raise EvaluationInputError(f"{what}: {path} holds {len(names)} arrays ({listed}); expected exactly one")
            try:
                return obj[names[0]]
            except Exception as exc:
                raise EvaluationInputError(f"{what}: cannot read array '{names[0]}' of {path} ({exc})") from None
    return obj


def cmd_eval(args) -> int:
    from cmr_bench.evaluation import evaluate, to_jsonable

    ks = _ints(args.k, "--k") if args.k is not None else [50]
    rs = _ints(args.r, "--r")
    arrays = [
        load_array(args.query, "--query"),
        load_array(args.retrieval, "--retrieval"),
        load_array(args.query_labels, "--query-labels"),
        load_array(args.retrieval_labels, "--retrieval-labels"),
    ]
    options = dict(
        similarity=args.similarity, ks=ks, rs=rs, ties=args.ties, device=args.device,
        map_k_denominator=args.map_k_denominator, zero_relevant=args.zero_relevant,
        memory_budget_mb=None if args.memory_budget_mb is None else _number(args.memory_budget_mb, "--memory-budget-mb"),
        pr_points=_number(args.pr_points, "--pr-points", int),
    )
    if options["pr_points"] != 0 and not 2 <= options["pr_points"] <= MAX_PR_POINTS:  # an absurd count allocates before failing
        raise EvaluationInputError(f"--pr-points: expected 0 (no curve) or 2..{MAX_PR_POINTS:,}, got {options['pr_points']}")
    if args.profile:  # warm up imports and caches so that the timing is the evaluation itself
        q, r, ql, rl = arrays
        evaluate(q[:1], r[:2], ql[:1], rl[:2], **{**options, "ks": [1], "rs": []})
    t0 = time.perf_counter()
    result = evaluate(*arrays, **options)
    elapsed = time.perf_counter() - t0
    if args.json:
        from cmr_bench.commands._common import print_json

        print_json(to_jsonable(result))
    else:
        print_result(result, len(arrays[0]))
    if args.profile:
        from cmr_bench.evaluation.profile import matrix_time

        bound = matrix_time(arrays[0], arrays[1], args.similarity, device=args.device,
                            memory_budget_mb=options["memory_budget_mb"] or 512, repeat=3)
        print(f"profile: evaluate {elapsed:.3f} s; {args.similarity} matrix alone {bound:.3f} s; "
              f"ratio {elapsed / max(bound, 1e-9):.2f}x", file=sys.stderr)
    return 0


def print_result(result: dict, n_q: int) -> None:
    from tabulate import tabulate

    print(f"{n_q} queries x {result['n_retrieval']} retrieval items, {result['similarity']}, ties={result['ties']}, "
          f"map@k denominator={result['map_k_denominator']}, zero-relevant queries: {result['n_zero_relevant']} "
          f"({result['zero_relevant']})")
    rows = [(k, f"{v:.4f}") for k, v in result.items() if k.startswith(("map@", "p@"))]
    print(tabulate(rows, headers=["metric", "value"], tablefmt="simple"))
    pr = result["pr_curve"]
    n = len(pr["precision"])
    pick = sorted(set(np.linspace(0, n - 1, min(n, 11)).round().astype(int).tolist()))
    fmt = lambda v: "-" if v != v else f"{v:.3f}"  # noqa: E731  (NaN: nothing retrieved)
    head = ["radius"] if "radius" in pr else []
    table = [[pr["radius"][i] if head else None] + [fmt(pr["recall"][i]), fmt(pr["precision"][i])] for i in pick]
    cols = head + ["recall", "precision"]
    table = [row[1:] if not head else row for row in table]
    print()
    print(tabulate(table, headers=cols, tablefmt="simple"))
