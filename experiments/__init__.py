"""Experiment files (TOML), installed as cmr_bench.experiments. This marker file holds no code:
a new reproducible experiment is a new .toml file here (format: docs/runner.md)."""
