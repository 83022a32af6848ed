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
        description="Evaluate query codes against retrieval codes (files: .npy, or .npz holding one array), or re-score "
        "a stored run's codes under another metric convention (--run). Conventions: docs/evaluation.md.",
    )
    p.add_argument("--query", metavar="Q.npy", help="query codes, n_q x d")
    p.add_argument("--retrieval", metavar="R.npy", help="retrieval codes, n_r x d")
    p.add_argument("--query-labels", metavar="QL.npy", help="1-D class ids or 2-D multi-hot")
    p.add_argument("--retrieval-labels", metavar="RL.npy", help="same kind as --query-labels")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="instead of files: a stored run folder (…/seed-k); its codes are re-scored, labels come from the dataset")
    p.add_argument("--metric-convention", default=None, metavar="NAME",
                   help="with --run: default (the suite's), legacy-dscmr, legacy-djsrh, legacy-calc-map-k or trec; "
                        "NAME@K or NAME@all for another cut-off (docs/experiments.md)")
    p.add_argument("--dataset", default=None,
                   help="with --run: the run's dataset, a name or manifest path (default: the name the run recorded)")
    p.add_argument("--similarity", default="cosine", metavar="{cosine,hamming,euclidean}", help="cosine (default), hamming (binary codes) or euclidean")
    p.add_argument("--k", nargs="+", default=None, metavar="K", help="cut-offs for map@k (default 50)")
    p.add_argument("--r", nargs="+", default=[], metavar="R", help="cut-offs for p@R (precision among the top R)")
    p.add_argument("--ties", default="average", metavar="{average,stable}", help="average (default: expected value over tie orders) or stable")
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--map-k-denominator", default="found", metavar="{found,trec,first-relevant}",
                   help="found (default: relevant items in the top k), trec (min(k, R)) or first-relevant "
                        "(the first min(k, R) relevant items wherever they rank; with --ties stable)")
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


FILE_ARGS = (("query", "--query"), ("retrieval", "--retrieval"), ("query_labels", "--query-labels"),
             ("retrieval_labels", "--retrieval-labels"))


def cmd_eval(args) -> int:
    from cmr_bench.evaluation import evaluate, to_jsonable

    given = [flag for attr, flag in FILE_ARGS if getattr(args, attr) is not None]
    if args.run is not None:
        if given:
            raise EvaluationInputError(f"--run takes its codes from the run folder; drop {', '.join(given)}")
        return cmd_eval_run(args)
    missing = [flag for attr, flag in FILE_ARGS if getattr(args, attr) is None]
    if missing:
        raise EvaluationInputError(f"the following arguments are required: {', '.join(missing)} (or --run RUN_DIR)")
    for flag, value in (("--metric-convention", args.metric_convention), ("--dataset", args.dataset)):
        if value is not None:
            raise EvaluationInputError(f"{flag} applies only with --run (for files use --ties, --map-k-denominator, --k)")
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


DIRECTION_NAMES = {"i2t": ("Img2Txt", "image", "text"), "t2i": ("Txt2Img", "text", "image")}


def _run_inputs(args):
    """(run.json, metrics.json, codes, query split, retrieval split) of a stored, finished run,
    its labels from the data layer, checked against the data and split the run recorded."""
    from cmr_bench.commands._common import root_of
    from cmr_bench.commands.run import load_for_run
    from cmr_bench.runner.store import STATUS_DONE, validate_run

    folder = Path(args.run)
    state = validate_run(folder)
    if state.status is None:
        raise EvaluationInputError(f"--run: no run folder {folder} (give a seed-k folder of the results store)")
    if state.status != STATUS_DONE:
        why = state.problem or state.run.get("reason", "") if state.run else state.problem
        raise EvaluationInputError(f"--run {folder}: the run is {state.status}{f' ({why})' if why else ''}; only finished runs have codes")
    run, metrics, spec = state.run, state.metrics, state.run["spec"]
    try:
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise EvaluationInputError(f"--run {folder}: arrays.npz is unreadable ({type(exc).__name__})") from None
    needed = [f"codes_{r}_{m}" for r in ("query", "retrieval") for m in ("image", "text")] + \
        ["split_query_indices", "split_retrieval_indices"]
    lacking = [k for k in needed if k not in arrays]
    if lacking:
        raise EvaluationInputError(f"--run {folder}: arrays.npz lacks {', '.join(lacking)}")
    dataset = load_for_run(args.dataset or spec.get("dataset", ""), root_of(args))
    if spec.get("data") and spec["data"] != dataset.fingerprint:
        raise EvaluationInputError(f"--run {folder}: the run was made on other data than dataset '{dataset.name}' here "
                                   f"(fingerprint {spec['data']}, here {dataset.fingerprint}); give its manifest with --dataset")
    protocol = dataset.protocol(spec.get("protocol", ""))
    splits = {}
    for role, name in (("query", protocol.query), ("retrieval", protocol.retrieval)):
        split = dataset.split(name)
        if not np.array_equal(split.indices, arrays[f"split_{role}_indices"]):
            raise EvaluationInputError(f"--run {folder}: its {role} split is not the dataset's '{name}' split here")
        splits[role] = split
    return run, metrics, arrays, splits["query"], splits["retrieval"]


def cmd_eval_run(args) -> int:
    from cmr_bench.evaluation.conventions import DEFAULT, get_convention, rescore

    conv = get_convention(args.metric_convention or DEFAULT)
    run, metrics, arrays, query, retrieval = _run_inputs(args)
    spec = run["spec"]
    similarity = metrics.get("similarity") or ("hamming" if spec.get("bits") else "cosine")
    rows, out = [], {"run": str(args.run), "convention": conv.name, "description": conv.description, "directions": {}}
    for d, (title, q_mod, r_mod) in DIRECTION_NAMES.items():
        result = rescore(arrays[f"codes_query_{q_mod}"], arrays[f"codes_retrieval_{r_mod}"], query.labels, retrieval.labels,
                         similarity=similarity, convention=conv.name, device=args.device)
        out["directions"][d] = {}
        for stored_key, new_key in conv.pairs(len(query)):
            stored = metrics[d].get(stored_key)
            value = float(result[new_key])
            out["directions"][d][new_key] = {"stored_metric": stored_key, "stored": stored, "rescored": value}
            rows.append([title, stored_key, "-" if stored is None else f"{stored:.4f}", new_key, f"{value:.4f}",
                         "" if stored is None else f"{value - stored:+.4f}"])
    if args.json:
        from cmr_bench.commands._common import print_json

        print_json(out)
        return 0
    from tabulate import tabulate

    label = spec.get("method", "?") + (f" [{spec['variant']}]" if spec.get("variant") else "") + \
        (f" {spec['bits']} bits" if spec.get("bits") else "")
    print(f"{label} seed {spec.get('seed')} on {spec.get('dataset')}/{spec.get('protocol')}: {len(query)} queries x "
          f"{len(retrieval)} items, {similarity}")
    print(f"convention {conv.name}: {conv.description}")
    print(tabulate(rows, headers=["direction", "stored", "value", "re-scored", "value", "difference"], tablefmt="simple",
                   disable_numparse=True))
    return 0
