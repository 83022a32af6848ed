"""Published reference numbers (CSV), installed as cmr_bench.published. This marker holds no code."""
