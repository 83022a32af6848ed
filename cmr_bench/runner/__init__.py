"""The runner: expand a grid of runs, train/encode through plugins, score through the
evaluator, and store every run atomically in the results store.

spec.py (a run's identity and folder), grid.py (expansion and the scheduler), execute.py
(one run), executors.py (in-process or N worker processes), ray_executor.py (Ray tasks),
lock.py (one lock per run), store.py (atomic writes, validation, housekeeping),
environment.py (what a run records about where it ran). See docs/runner.md, docs/scaling.md."""
