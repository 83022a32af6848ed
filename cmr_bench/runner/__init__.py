"""The runner: expand a grid of runs, train/encode through plugins, score through the
evaluator, and store every run atomically in the results store."""
