"""A run's identity: everything that changes its numbers goes into the resolved config, and
the run's folder is derived from it, so finished runs are found again (and skipped)."""

from __future__ import annotations

import hashlib
import numbers
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Ranks at which precision@R is stored (capped at the retrieval set size).
DEFAULT_RS = (10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
EVAL_KS = (50,)
# where a run's base config comes from (`run --config`), and which runs a curve figure draws
CONFIG_SOURCES = ("default", "tuned")
RUN_SELECTIONS = ("all", *CONFIG_SOURCES)


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    protocol: str
    method: str
    seed: int
    variant: str = ""  # "" = the method as published; else a key of Method.variants
    bits: int | None = None  # binary methods only
    overrides: dict[str, Any] = field(default_factory=dict)  # --set key=value
    config: dict[str, Any] = field(default_factory=dict)  # resolved hyperparameters
    val_fraction: float = 0.1
    threads: int = 1  # torch intra-op threads: another count changes the arithmetic
    data: str = ""  # Dataset.fingerprint of the data the run trains and evaluates on
    config_source: str = "default"  # "tuned": the config came from `cmr-bench tune` (--config tuned)
    tuned: dict[str, Any] = field(default_factory=dict)  # that file and its study (recorded, not hashed)

    def identity(self) -> dict[str, Any]:
        """What the config hash covers (the seed is kept apart: seeds of one config share a folder)."""
        out = {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "method": self.method,
            "variant": self.variant,
            "bits": self.bits,
            "config": self.config,
            "val_fraction": self.val_fraction,
            "evaluation": {"ks": list(EVAL_KS)},
        }
        if self.threads != 1:  # keyed only when not the default, so existing runs keep their folders
            out["threads"] = self.threads
        if self.data:  # another dataset under the same name (or changed files) is another run
            out["data"] = self.data
        if self.config_source != "default":  # a tuned config equal to the defaults still gets its own runs
            out["config_source"] = self.config_source
        return out

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def label(self) -> str:
        parts = [self.method]
        if self.variant:
            parts.append(f"[{self.variant}]")
        if self.bits:
            parts.append(f"{self.bits}b")
        if self.config_source != "default":
            parts.append(f"({self.config_source})")
        return " ".join(parts) + f" seed={self.seed}"

    def folder(self, runs_dir: Path) -> Path:
        """<runs>/<dataset>/<protocol>/<method>/<tag>-<hash>/seed-<k>; names that are not
        plain path components (see cmr_bench.paths) are refused, so no run leaves runs_dir."""
        from cmr_bench.paths import UnsafePathError, check_component, is_within

        check_component(self.dataset, "dataset name")
        check_component(self.protocol, "protocol name")
        check_component(self.method, "method name")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        if self.config_source not in CONFIG_SOURCES:
            raise ValueError(f"config_source must be 'default' or 'tuned', got {self.config_source!r}")
        tag = self.config_source + ("-" + slug(self.variant) if self.variant else "")
        if self.variant and self.config_source == "default":  # folders of default runs keep their old names
            tag = slug(self.variant)
        if self.bits:
            tag += f"-{self.bits}bits"
        if self.overrides:  # a sweep's folders say what was set (the hash still decides identity)
            tag += "-" + slug("set-" + "-".join(f"{k}-{v}" for k, v in sorted(self.overrides.items())))[:48].strip("-")
        if self.threads != 1:
            tag += f"-t{self.threads}"
        path = Path(runs_dir) / self.dataset / self.protocol / self.method / f"{tag}-{self.config_hash}" / f"seed-{self.seed}"
        if not is_within(path, runs_dir):  # a symlinked folder inside a results dir received from someone
            raise UnsafePathError(f"run folder {path} resolves outside {runs_dir} (a symlink in the results dir?)")
        return path

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "config_hash": self.config_hash}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
