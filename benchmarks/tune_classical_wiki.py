"""Hyperparameter selection for the classical methods on wiki, on validation only: the
training split is carved (carve_validation, 20%, two carve seeds) and each grid point is fit
on the rest and scored by mAP@all (val images <-> val texts, cosine); the test split is never
loaded. Prints one line per grid point and the best per method. Not a pytest benchmark.

    CMR_BENCH_DATA=... python benchmarks/tune_classical_wiki.py [method ...]
"""

from __future__ import annotations

import itertools
import sys

import numpy as np

import cmr_bench
from cmr_bench.data.splits import carve_validation
from cmr_bench.evaluation.core import evaluate
from cmr_bench.registry import all_methods

GRIDS = {
    "cfa": {"dims": [5, 10]},
    "kcca": {"kernel": ["rbf"], "gamma_scale": [0.25, 1.0, 4.0, 16.0], "reg": [0.1, 1.0, 10.0], "dims": [10]},
    "kcca[poly]": {"kernel": ["poly"], "degree": [2.0, 3.0, 4.0], "reg": [0.1, 1.0, 10.0], "dims": [10]},
    "cca-3v": {"dims": [10, 20, 40, 80], "reg": [1e-4, 1e-2], "power": [1.0, 4.0]},
    "scm": {"cca": [True, False], "l2": [1e-6, 1e-5, 1e-4, 1e-2], "center_posteriors": [False, True]},
    "jfssl": {"lambda1": [1e-3, 1e-2, 0.1], "lambda2": [1e-3, 1e-2, 1e-1, 1.0], "k": [10, 50], "center": [True]},
    "lcfs": {"lambda1": [1e-2, 0.1, 1.0], "lambda2": [0.1, 1.0, 10.0], "center": [True]},
    "lgcfl": {"lambda_image": [0.03, 0.1, 0.3, 1.0], "lambda_text": [0.03, 0.1, 0.3, 1.0], "group_size": [1, 8], "center": [True]},
    "jrl[knn-labels]": {"retrieval": ["knn-labels"], "retrieval_k": [10, 50, 100, 300]},
    "jrl": {"gamma": [1.0, 10.0, 100.0], "sigma": [1.0, 10.0, 100.0], "lambda": [1.0], "k": [10]},
}


def score(cls, config, splits, num_classes):
    out = []
    for tr, va in splits:
        m = cls(image_dim=tr.image.shape[1], text_dim=tr.text.shape[1], num_classes=num_classes, config=cls.resolve_config(config), seed=0)
        m.fit(tr)
        ci, ct = m.encode(va.image, "image"), m.encode(va.text, "text")
        i2t = evaluate(ci, ct, va.labels, va.labels, ks=(), device="cpu")["map@all"]
        t2i = evaluate(ct, ci, va.labels, va.labels, ks=(), device="cpu")["map@all"]
        out.append((i2t, t2i))
    i2t, t2i = np.mean(out, 0)
    return float(i2t), float(t2i)


def main(names):
    ds = cmr_bench.load_dataset("wiki")
    train = ds.splits["train"]  # the test split is never touched
    splits = [carve_validation(train, 0.2, seed=s) for s in (0, 1)]
    for name in names or GRIDS:
        cls, grid = all_methods()[name.split("[")[0]], GRIDS[name]
        best = None
        for values in itertools.product(*grid.values()):
            config = dict(zip(grid, values))
            i2t, t2i = score(cls, config, splits, ds.num_classes)
            print(f"{name} {config} val i2t {i2t:.4f} t2i {t2i:.4f} avg {(i2t + t2i) / 2:.4f}", flush=True)
            if best is None or i2t + t2i > best[0]:
                best = (i2t + t2i, config)
        print(f"BEST {name} {best[1]} val avg {best[0] / 2:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
