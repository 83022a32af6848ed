"""cmr-bench: reproducible benchmarks for cross-modal retrieval and hashing.

Flow: data (manifests -> loader -> splits) -> methods (plugins: fit/encode)
-> runner (grid, seeds, run store) -> evaluator -> tables and figures.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_dataset", "evaluate", "CmrBenchError"]


def __getattr__(name):
    # Lazy: `import cmr_bench` stays cheap (no torch import) for the CLI's --help.
    if name == "load_dataset":
        from cmr_bench.data.loader import load_dataset

        return load_dataset
    if name == "evaluate":
        from cmr_bench.evaluation import evaluate

        return evaluate
    if name == "CmrBenchError":
        from cmr_bench.errors import CmrBenchError

        return CmrBenchError
    raise AttributeError(f"module 'cmr_bench' has no attribute {name!r}")
