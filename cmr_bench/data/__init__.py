"""Data layer: manifests (datasets/*.toml) -> readers -> loader -> typed splits."""

from cmr_bench.data.types import Dataset, Protocol, Split

__all__ = ["Dataset", "Protocol", "Split"]
