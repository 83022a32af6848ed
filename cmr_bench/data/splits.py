"""Seeded, recorded splits: the query/database/train draw of the hashing layouts and the
validation split carved from train (for methods that select epochs or hyperparameters;
the test/query split is never used for selection)."""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Split


def sample_query_database(n: int, n_query: int, n_train: int, seed: int) -> dict[str, np.ndarray]:
    """DCMH/DJSRH protocol: `n_query` random queries, the rest is the database, and
    `n_train` training items sampled from the database. Indices are sorted."""
    if n_query + n_train > n:
        raise ValueError(f"cannot draw {n_query} queries and {n_train} training items from {n} rows")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    query = np.sort(perm[:n_query])
    database = np.sort(perm[n_query:])
    train = np.sort(rng.choice(database, size=n_train, replace=False))
    return {"query": query, "database": database, "train": train}


def carve_validation(train: Split, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """Stratified by class for single-label data (at least one item of each class with >= 2
    items), uniform for multi-label data. Returns (train without validation, validation)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation fraction must be in (0, 1)")
    rng = np.random.default_rng(seed)
    n = len(train)
    if train.multilabel:
        val_rows = rng.choice(n, size=max(1, round(fraction * n)), replace=False)
    else:
        val_rows = []
        for c in np.unique(train.labels):
            rows = np.flatnonzero(train.labels == c)
            if len(rows) >= 2:
                take = max(1, round(fraction * len(rows)))
                val_rows.extend(rng.choice(rows, size=take, replace=False).tolist())
        val_rows = np.asarray(val_rows, dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[val_rows] = True
    return train.subset(np.flatnonzero(~mask), name="train"), train.subset(np.flatnonzero(mask), name="val")


def rejoin(train: Split, val: Split) -> Split:
    """The whole training split again from (train without validation, validation): every item
    of both, ordered by dataset row as the split it was carved from (used to refit a method on
    every training item once its epoch count was chosen on the validation part)."""
    image = np.concatenate([train.image, val.image])
    text = np.concatenate([train.text, val.text])
    labels = np.concatenate([train.labels, val.labels])
    indices = np.concatenate([train.indices, val.indices])
    order = np.argsort(indices, kind="stable")
    return Split("train", image[order], text[order], labels[order], indices[order])
