"""Dataset manifests (TOML), installed as cmr_bench.datasets. This marker file holds no code:
adding a dataset of a known layout means adding a .toml file here, nothing else."""
