"""Typed containers the loader returns and every method consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def label_matrix(labels: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """Single-label ints -> one-hot (n, c); multi-hot rows pass through; in `dtype`."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(dtype)
    return np.eye(num_classes, dtype=dtype)[labels.astype(np.int64)]


@dataclass(frozen=True)
class Split:
    """Paired features of one split. Row i of `image`, `text` and `labels` is one pair.

    labels: int64 of shape (n,) for single-label data, or a multi-hot int64 (n, c) matrix.
    indices: the rows of the dataset's full arrays this split holds (recorded with each run).
    """

    name: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __post_init__(self):
        n = len(self.image)
        if not (len(self.text) == len(self.labels) == len(self.indices) == n):
            raise ValueError(f"split '{self.name}': image, text, labels and indices differ in length")

    def __len__(self) -> int:
        return len(self.image)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def features(self, modality: str) -> np.ndarray:
        if modality == "image":
            return self.image
        if modality == "text":
            return self.text
        raise ValueError(f"unknown modality '{modality}' (image or text)")

    def subset(self, rows: np.ndarray, name: str | None = None) -> "Split":
        rows = np.asarray(rows)
        return Split(name or self.name, self.image[rows], self.text[rows], self.labels[rows], self.indices[rows])


@dataclass(frozen=True)
class Protocol:
    """Which split trains, which one queries and which one is searched."""

    name: str
    train: str
    query: str
    retrieval: str
    description: str = ""


@dataclass
class Dataset:
    name: str
    splits: dict[str, Split]
    protocols: dict[str, Protocol]
    num_classes: int
    label_kind: str  # "single" or "multi"
    class_names: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str = field(default="", repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """A hash of the data actually loaded: every split's arrays and indices, the labels'
        kind and class count, and the protocols. Part of every run's identity, so two
        datasets that share a name never share (or overwrite) runs."""
        if not self._fingerprint:
            import hashlib
            import json

            h = hashlib.sha256()
            head = {"num_classes": int(self.num_classes), "label_kind": self.label_kind,
                    "protocols": sorted((p.name, p.train, p.query, p.retrieval) for p in self.protocols.values())}
            h.update(json.dumps(head, sort_keys=True).encode())
            for name in sorted(self.splits):
                split = self.splits[name]
                for what in ("image", "text", "labels", "indices"):
                    a = np.ascontiguousarray(getattr(split, what))
                    h.update(f"|{name}.{what}:{a.dtype.str}:{a.shape}|".encode())
                    h.update(memoryview(a).cast("B"))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def training_splits(self) -> list[str]:
        """The splits some protocol trains on (a train-only load holds exactly these)."""
        return sorted({p.train for p in self.protocols.values()})

    def training_view(self) -> "Dataset":
        """This dataset with its training splits only: its fingerprint equals that of the same
        data loaded with `load_dataset(..., train_only=True)` (what `cmr-bench tune` records)."""
        keep = self.training_splits()
        return Dataset(self.name, {k: v for k, v in self.splits.items() if k in keep}, self.protocols, self.num_classes,
                       self.label_kind, self.class_names, self.manifest)

    @property
    def image_dim(self) -> int:
        return int(next(iter(self.splits.values())).image.shape[1])

    @property
    def text_dim(self) -> int:
        return int(next(iter(self.splits.values())).text.shape[1])

    def split(self, name: str) -> Split:
        if name not in self.splits:
            from cmr_bench.errors import UnknownNameError

            raise UnknownNameError(f"split of dataset '{self.name}'", name, self.splits)
        return self.splits[name]

    def protocol(self, name: str) -> Protocol:
        if name not in self.protocols:
            from cmr_bench.errors import UnknownNameError

            raise UnknownNameError(f"protocol of dataset '{self.name}'", name, self.protocols)
        return self.protocols[name]
