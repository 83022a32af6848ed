"""One thread count for everything a run computes with: torch's intra-op pool and the BLAS
libraries numpy and scipy call (through threadpoolctl).

A fixed count, not one derived from the cores or from --jobs: the count changes the
floating-point reductions, so a run in this process (--jobs 1) must use the same count as one in
a worker (--jobs N, whose BLAS is limited by environment variables at start). Before BLAS was
limited here too, CCA-3V's Txt2Img mAP was 0.22459 at --jobs 1 and 0.22431 at --jobs 2. Idle
threads spinning on a loaded machine also made runs 30-50x slower; parallelism comes from --jobs."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def run_threads(threads: int):
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS now: threadpoolctl limits only the libraries already loaded)
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(threads))
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)
