"""Published reference numbers (results/published/*.csv, installed as cmr_bench.published)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

TABLE_FILES = {"2": "sdcmr_table2.csv", "3": "sdcmr_table3.csv", "4": "sdcmr_table4.csv", "5": "sdcmr_table5.csv"}
# Numbers published on the features cmr-bench has (not the paper's), shown beside Table II.
EXTRA_FILES = {"2": ("same_features_wiki.csv",)}


def published(table: str) -> pd.DataFrame:
    path = resources.files("cmr_bench.published") / TABLE_FILES[table]
    with resources.as_file(path) as p:
        df = pd.read_csv(p, dtype={"key": str, "note": str})
    for extra in EXTRA_FILES.get(table, ()):
        with resources.as_file(resources.files("cmr_bench.published") / extra) as p:
            df = pd.concat([df, pd.read_csv(p, dtype={"key": str, "note": str})], ignore_index=True)
    df["key"] = df["key"].fillna("")
    df["note"] = df["note"].fillna("")
    return df
