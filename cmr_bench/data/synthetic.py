"""Seeded, class-structured paired features of any size, for tests, demos and benchmarks.

Each pair shares a latent vector built from its classes' prototypes; the image and text
features are different random (nonlinear) views of that latent plus independent noise, so
a method that learns a common space can beat chance but not trivially reach 1.0.
"""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Dataset, Protocol, Split


def _labels(rng, n, num_classes, multilabel):
    if not multilabel:
        return rng.integers(0, num_classes, size=n).astype(np.int64)
    y = np.zeros((n, num_classes), dtype=np.int64)
    y[np.arange(n), rng.integers(0, num_classes, size=n)] = 1  # every row has at least one label
    extra = rng.random((n, num_classes)) < 1.5 / num_classes
    return np.maximum(y, extra.astype(np.int64))


# Largest synthetic dataset: cells of the (n x (image_dim + text_dim + classes)) arrays built.
MAX_CELLS = 200_000_000
# One training item fits nothing (no spread to centre, scale or correlate): refused up front.
MIN_TRAIN = 2
TRAIN_WHY = " (a method cannot fit one training item)"
_INTS = ("n_train", "n_test", "image_dim", "text_dim", "num_classes", "seed")


def check_params(params: dict) -> dict:
    """The [synthetic] table of a manifest, checked (ValueError with the reason): known keys,
    the right types, sizes >= 1 and small enough to build, a finite noise level."""
    import math

    known = set(_INTS) | {"multilabel", "noise"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    for key in _INTS:
        if key in params:
            value = params[key]
            lo = {"seed": 0, "n_train": MIN_TRAIN}.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 2**62:
                raise ValueError(f"'{key}' must be an integer >= {lo}" + (TRAIN_WHY if key == "n_train" else ""))
    if "multilabel" in params and not isinstance(params["multilabel"], bool):
        raise ValueError("'multilabel' must be true or false")
    if "noise" in params:
        noise = params["noise"]
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise ValueError("'noise' must be a finite number >= 0")
    n = params.get("n_train", 200) + params.get("n_test", 100)
    latent = max(4, params.get("num_classes", 5))
    width = params.get("image_dim", 32) + params.get("text_dim", 16) + latent * 2
    # rows x (features, latent, class membership), plus the prototypes and the two views
    cells = n * width + latent * (latent + params.get("image_dim", 32) + params.get("text_dim", 16))
    if cells > MAX_CELLS:
        raise ValueError(f"{n:,} rows x {width:,} columns and {latent:,} classes is more than the {MAX_CELLS:,} "
                         "cells a synthetic dataset may have")
    return dict(params)


def make_synthetic(
    n_train: int = 200,
    n_test: int = 100,
    image_dim: int = 32,
    text_dim: int = 16,
    num_classes: int = 5,
    multilabel: bool = False,
    noise: float = 1.0,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    check_params({"n_train": n_train, "n_test": n_test, "image_dim": image_dim, "text_dim": text_dim,
                  "num_classes": num_classes, "multilabel": bool(multilabel), "noise": noise, "seed": seed})
    rng = np.random.default_rng(seed)
    latent_dim = max(4, num_classes)
    prototypes = rng.normal(size=(num_classes, latent_dim)) * 2.0
    view_image = rng.normal(size=(latent_dim, image_dim)) / np.sqrt(latent_dim)
    view_text = rng.normal(size=(latent_dim, text_dim)) / np.sqrt(latent_dim)
    n = n_train + n_test
    labels = _labels(rng, n, num_classes, multilabel)
    if multilabel:
        member = labels
    else:  # one-hot rows without a (classes x classes) identity matrix
        member = np.zeros((n, num_classes), dtype=np.int64)
        member[np.arange(n), labels] = 1
    latent = (member @ prototypes) / member.sum(1, keepdims=True) + rng.normal(size=(n, latent_dim))
    image = np.tanh(latent @ view_image) + noise * 0.5 * rng.normal(size=(n, image_dim))
    text = latent @ view_text + noise * 0.5 * rng.normal(size=(n, text_dim))
    image, text = image.astype(np.float32), text.astype(np.float32)
    rows = np.arange(n)
    train = Split("train", image[:n_train], text[:n_train], labels[:n_train], rows[:n_train])
    test = Split("test", image[n_train:], text[n_train:], labels[n_train:], rows[n_train:])
    protocols = {
        "real": Protocol("real", "train", "test", "test", "test queries against the test set"),
        "hash": Protocol("hash", "train", "test", "train", "test queries against the training set"),
    }
    return Dataset(
        name=name,
        splits={"train": train, "test": test},
        protocols=protocols,
        num_classes=num_classes,
        label_kind="multi" if multilabel else "single",
        class_names=[f"class{i}" for i in range(num_classes)],
        manifest={"name": name, "synthetic": True, "seed": seed},
    )
