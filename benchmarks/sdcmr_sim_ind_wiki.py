"""Issue 11: SDCMR's L_sim / L_ind on posterior samples (the default) or on the posterior means,
scored on the validation split only (a 20 % stratified carve of wiki's training split, carve
seed = run seed; val images <-> val texts, mean of both directions' mAP@all).

    CMR_BENCH_DATA=... python benchmarks/sdcmr_sim_ind_wiki.py samples   # or: means
"""

import json
import sys

import torch

from cmr_bench.data.loader import load_dataset
from cmr_bench.registry import all_methods
from cmr_bench.tuning import validation_score

torch.set_num_threads(1)
setting = sys.argv[1] if len(sys.argv) > 1 else "samples"
dataset = load_dataset("wiki")
cls = all_methods()["sdcmr"]
train_full = dataset.split("train")
for seed in (0, 1, 2):
    config = dict(cls.defaults, sim_ind_on=setting)
    score = validation_score(cls, dataset, train_full, config, None, seed, 0.2)
    print(json.dumps({"setting": setting, "seed": seed, "val_avg_map": round(score, 4)}), flush=True)
