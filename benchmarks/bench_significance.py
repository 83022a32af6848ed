"""Cost of the significance marks per table column (report/significance.py), on synthetic
per-query AP: one column = the best entry against 20 others, 10,000 sign flips and the 2,000
bootstrap resamples of every entry's CI, at wiki (693), MIRFlickr (2,000) and MS-COCO (5,000)
query counts. Recorded, not asserted (timings depend on the machine and its load)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmr_bench.report.significance import column_marks


@pytest.mark.parametrize("queries", [693, 2000, 5000])
def test_column_marks(benchmark, queries):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.6, queries)
    column = {k: pd.Series(np.clip(base + rng.normal(0, 0.05, queries) - 0.001 * k, 0, 1)) for k in range(21)}
    marks = benchmark(column_marks, column)
    assert len(marks) == 21
