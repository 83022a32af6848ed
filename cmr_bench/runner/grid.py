"""Expand --methods/--seeds/--bits/--variants into RunSpecs and run them, skipping finished runs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmr_bench.data.types import Dataset
from cmr_bench.errors import CmrBenchError
from cmr_bench.registry import get_method
from cmr_bench.runner.spec import RunSpec
from cmr_bench.runner.store import STATUS_DONE, read_status

DEFAULT_PROTOCOL = {"real": "real", "binary": "hash"}
DEFAULT_BITS = (16, 32, 64, 128)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any] | Any]:
    """`key=value` (all methods that have the key) or `method.key=value`; values parsed as
    JSON when they can be (numbers, booleans, lists), else kept as strings."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CmrBenchError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def _overrides_for(method: str, cls, overrides: dict[str, Any]) -> dict[str, Any]:
    mine = {}
    for key, value in overrides.items():
        if "." in key:
            target, name = key.split(".", 1)
            if target == method:
                mine[name] = value
        elif key in cls.defaults:
            mine[key] = value
    return mine


def expand(
    methods: list[str], dataset: Dataset, seeds: list[int], protocol: str | None = None,
    bits: list[int] | None = None, variants: str = "none", overrides: dict[str, Any] | None = None,
) -> list[RunSpec]:
    overrides = overrides or {}
    for key in overrides:
        if "." not in key and not any(key in get_method(m).defaults for m in methods):
            raise CmrBenchError(f"--set {key}: no selected method has a hyperparameter '{key}'")
    specs = []
    for name in methods:
        cls = get_method(name)
        proto = protocol or DEFAULT_PROTOCOL[cls.code_type]
        if proto not in dataset.protocols:
            raise CmrBenchError(
                f"dataset '{dataset.name}' has no protocol '{proto}' (has: {', '.join(dataset.protocols)}) for method '{name}'"
            )
        user = _overrides_for(name, cls, overrides)
        if variants == "none":
            variant_names = [""]
        elif variants == "all":
            variant_names = [""] + list(cls.variants)
        else:
            wanted = [v.strip() for v in variants.split(",") if v.strip()]
            variant_names = [""] + [v for v in wanted if v in cls.variants]
        code_lengths = [b for b in (bits or DEFAULT_BITS)] if cls.code_type == "binary" else [None]
        for variant in variant_names:
            merged = {**cls.variants.get(variant, {}), **user}
            config = cls.resolve_config(merged, dataset=dataset.name)
            for b in code_lengths:
                for seed in seeds:
                    specs.append(RunSpec(dataset.name, proto, name, seed, variant, b, user, config))
    return specs


@dataclass
class GridResult:
    ran: list[dict] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)


def run_grid(specs: list[RunSpec], dataset: Dataset, device: str, runs_dir: Path, force: bool = False, progress: bool | None = None) -> GridResult:
    from tqdm import tqdm

    from cmr_bench.runner.execute import execute

    result = GridResult()
    todo = []
    for spec in specs:
        if not force and read_status(spec.folder(runs_dir)) == STATUS_DONE:
            result.skipped.append(spec)
        else:
            todo.append(spec)
    interactive = sys.stdout.isatty() if progress is None else progress
    print(f"{len(specs)} runs: {len(result.skipped)} already finished, {len(todo)} to run", flush=True)
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not interactive, file=sys.stdout)
    for i, spec in enumerate(todo, 1):
        start = time.perf_counter()
        run = execute(spec, dataset, device, runs_dir)
        took = time.perf_counter() - start
        status = run["status"]
        line = f"[{i}/{len(todo)}] {spec.dataset}/{spec.protocol} {spec.label}: {status} in {took:.1f}s"
        if status != STATUS_DONE:
            line += f" ({run.get('reason')})"
            result.failed.append(run)
        result.ran.append(run)
        if interactive:
            bar.write(line)
            bar.update(1)
        else:
            print(line, flush=True)
    bar.close()
    return result
