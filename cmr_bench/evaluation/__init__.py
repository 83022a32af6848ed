"""Evaluation of cross-modal retrieval and hashing: mAP@all, mAP@k, P@R, PR curves and
per-query AP, exact under ties, chunked, on the CPU (numpy) or CUDA (torch).

    from cmr_bench.evaluation import evaluate, to_jsonable
    result = evaluate(query_codes, retrieval_codes, query_labels, retrieval_labels,
                      similarity="hamming", ks=(50,), rs=(100, 500))

Conventions and formulas: docs/evaluation.md.
"""

from cmr_bench.evaluation.core import evaluate, to_jsonable

__all__ = ["evaluate", "to_jsonable"]
