"""Named metric conventions: the suite's default and those of published evaluation code, each
a set of `evaluate` options, so stored codes can be re-scored the way a paper scored them
(`cmr-bench eval --run RUN_DIR --metric-convention NAME`). What each published function does
is in docs/experiments.md ("Re-scoring stored runs"); the evaluator computes every number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmr_bench.errors import CmrBenchError, UnknownNameError


@dataclass(frozen=True)
class Convention:
    name: str
    description: str
    ties: str
    map_k_denominator: str
    zero_relevant: str
    k: int | str | None  # a cut-off, "n_query" (the number of queries), or None (map@all only)
    stored: tuple[str, ...]  # the suite's stored metrics these numbers stand beside

    def cutoff(self, n_query: int) -> int | None:
        return n_query if self.k == "n_query" else self.k

    def pairs(self, n_query: int) -> list[tuple[str, str]]:
        """[(stored metric, re-scored metric)] to print side by side."""
        k = self.cutoff(n_query)
        if self.name == DEFAULT:
            return [(m, m) for m in self.stored]
        return [(self.stored[0], f"map@{k}" if k else "map@all")]

    def options(self, n_query: int) -> dict[str, Any]:
        k = self.cutoff(n_query)
        return {"ties": self.ties, "map_k_denominator": self.map_k_denominator, "zero_relevant": self.zero_relevant,
                "ks": (k,) if k else (), "rs": ()}


DEFAULT = "default"
CONVENTIONS = {
    c.name: c for c in (
        Convention(DEFAULT, "cmr-bench's own (what every run stores): ties averaged exactly over their orders, "
                   "map@50 over the relevant items found in the top 50, queries without a relevant item count 0",
                   "average", "found", "count", 50, ("map@all", "map@50")),
        # DSCMR's evaluate.py, fx_calc_map_label(image, text, label, k=0): k = 0 becomes the number
        # of queries (rows of the distance matrix), AP divides by the relevant items found in the
        # top k (0 if none), items ordered by numpy's argsort, whose order inside ties depends on
        # the numpy version: the stable order (retrieval index) stands for it.
        Convention("legacy-dscmr", "DSCMR's fx_calc_map_label: AP over the top k = number of queries, divided by the "
                   "relevant items found there; ties in retrieval order (argsort)",
                   "stable", "found", "count", "n_query", ("map@all",)),
        # DJSRH's metric.py, calculate_top_map(..., topk=50) as its train.py calls it: Hamming
        # distances argsorted, AP over the top 50 divided by the relevant items found there;
        # queries finding none add 0 but still count in the mean.
        Convention("legacy-djsrh", "DJSRH's calculate_top_map at topk=50: AP over the top 50, divided by the relevant "
                   "items found there, zero-found queries count 0; ties in retrieval order (argsort)",
                   "stable", "found", "count", 50, ("map@50",)),
        # The PyTorch calc_map_k(qB, rB, query_L, retrieval_L, k=None) of the DCMH/SSAH ports and
        # many later hashing repositories: Hamming distances torch.sort-ed, precision at each of the
        # first min(k, R) relevant items wherever they rank, averaged over min(k, R); queries without
        # a relevant item add 0 but count. k = None (its default) is every item: AP@all.
        Convention("legacy-calc-map-k", "the PyTorch calc_map_k of DCMH/SSAH ports: precision at the first min(k, R) "
                   "relevant items wherever they rank, over min(k, R); zero-relevant queries count 0; ties in "
                   "retrieval order; k = all unless given (legacy-calc-map-k@50)",
                   "stable", "first-relevant", "count", None, ("map@all",)),
        Convention("trec", "TREC-style map@50: AP over the top 50 divided by min(50, relevant items); ties averaged",
                   "average", "trec", "count", 50, ("map@50",)),
    )
}


def get_convention(name: str) -> Convention:
    """A named convention, or NAME@K / NAME@all: the same rules at another cut-off (DJSRH's
    code at topk=500, TREC at 10, ...)."""
    base, at, cut = str(name).partition("@")
    if base not in CONVENTIONS:
        raise UnknownNameError("metric convention", base, CONVENTIONS)
    conv = CONVENTIONS[base]
    if not at:
        return conv
    if cut == "all":
        k = None
    elif cut.isdigit() and 0 < int(cut) <= 10**9:
        k = int(cut)
    else:
        raise CmrBenchError(f"metric convention {str(name)[:40]!a}: the part after '@' must be a positive integer or 'all'")
    stored = ("map@50",) if k == 50 else ("map@all",)  # the stored number nearest to it, printed beside it
    return Convention(f"{base}@{cut}", f"{conv.description}; here with the cut-off at {cut}",
                      conv.ties, conv.map_k_denominator, conv.zero_relevant, k, stored)


def rescore(query, retrieval, query_labels, retrieval_labels, *, similarity: str, convention: str = DEFAULT,
            device: str = "cpu") -> dict[str, Any]:
    """`evaluate` under a named convention (same inputs and result as evaluate)."""
    from cmr_bench.evaluation.core import evaluate

    conv = get_convention(convention)
    return evaluate(query, retrieval, query_labels, retrieval_labels, similarity=similarity, device=device,
                    **conv.options(len(query)))
