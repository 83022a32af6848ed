"""The committed tuned configs: what `cmr-bench tune` found, one TOML file per method, dataset and
code length (<tuned dir>/<dataset>/<method>[-<bits>bits].toml), and how a run reads it back
(`run --config tuned`, `reproduce`). Optuna is not needed to read or write them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from cmr_bench.errors import CmrBenchError


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise CmrBenchError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise CmrBenchError(f"cannot write {type(v).__name__} to TOML")


def write_tuned(result: dict, out_dir: Path) -> Path:
    """<out>/<dataset>/<method>[-<bits>bits].toml: the best config and how it was found."""
    path = Path(out_dir) / result["dataset"] / (result["method"] + (f"-{result['bits']}bits" if result["bits"] else "") + ".toml")
    lines = ["# written by `cmr-bench tune`"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in result.items() if k != "config" and v is not None]
    lines += ["", "[config]"] + [f"{k} = {_toml_value(v)}" for k, v in result["config"].items() if v is not None]
    from cmr_bench.safe_io import make_folder, write_text

    make_folder(path.parent, "tuned-config folder", base=Path(out_dir))
    return write_text(path, "\n".join(lines) + "\n", "tuned config")

DEFAULT_TUNED_DIR = Path("results") / "tuned"


class TunedConfigMissing(CmrBenchError):
    """No tuned file for a method (the runner collects these into one line)."""

    def __init__(self, method: str, path: Path):
        self.method, self.path = method, path
        super().__init__(f"no tuned config for method '{method}': {path} does not exist "
                         f"(make it with `cmr-bench tune --methods {method} ...`)")


def tuned_path(method: str, dataset: str, bits: int | None = None, tuned_dir=None) -> Path:
    """Where `cmr-bench tune` writes a study's result (write_tuned)."""
    from cmr_bench.paths import check_component

    check_component(dataset, "dataset name")
    check_component(method, "method name")
    return Path(tuned_dir or DEFAULT_TUNED_DIR) / dataset / (method + (f"-{bits}bits" if bits else "") + ".toml")


def read_tuned(path: Path) -> dict:
    """A tuned file, parsed and checked for the keys a run needs; one line when unusable."""
    import tomllib

    from cmr_bench.safe_io import read_text

    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    text = read_text(Path(path), "tuned config")  # a regular file of a sane size: a FIFO never hangs
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CmrBenchError(f"tuned config {path} is unreadable: {getattr(exc, 'strerror', None) or str(exc).splitlines()[0]}") from None
    for key, kind in (("method", str), ("dataset", str), ("config", dict), ("value", (int, float)), ("trials", int)):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise CmrBenchError(f"tuned config {path}: missing or malformed '{key}' (not written by `cmr-bench tune`?)")
    return data


def tuned_config(method: str, dataset, bits: int | None = None, tuned_dir=None) -> dict:
    """The best config `cmr-bench tune` found for `method` on `dataset`, resolved against the
    plugin's current defaults, as a run's config; CmrBenchError (one line) when there is none or
    it no longer fits. `dataset`: a loaded Dataset (its training data must be the data tuned on)
    or a dataset name (no data check). Binary methods are tuned per code length: `bits` picks
    the file. Untuned keys must still equal the plugin's defaults, so a tuned row never differs
    from the default row by a default that changed after tuning."""
    from cmr_bench.registry import get_method

    cls = get_method(method)
    name = dataset if isinstance(dataset, str) else dataset.name
    if cls.code_type == "binary" and bits is None:
        raise CmrBenchError(f"method '{method}' makes binary codes: its tuned config depends on the code length (bits)")
    path = tuned_path(method, name, bits if cls.code_type == "binary" else None, tuned_dir)
    try:
        tuned = read_tuned(path)
    except FileNotFoundError:
        raise TunedConfigMissing(method, path) from None
    if tuned["method"] != method or tuned["dataset"] != name or (cls.code_type == "binary" and tuned.get("bits") != bits):
        raise CmrBenchError(f"tuned config {path} is for {tuned['method']} on {tuned['dataset']}"
                            f"{' at ' + str(tuned.get('bits')) + ' bits' if tuned.get('bits') else ''}, not {method} on {name}")
    if not isinstance(dataset, str) and tuned.get("data") and tuned["data"] != dataset.training_view().fingerprint:
        raise CmrBenchError(f"tuned config {path} was tuned on other data than dataset '{name}' has now "
                            f"(fingerprint {tuned['data']}); tune again")
    stored = tuned["config"]
    unknown = sorted(set(stored) - set(cls.defaults))
    if unknown:
        raise CmrBenchError(f"tuned config {path}: '{unknown[0]}' is no longer a hyperparameter of {method}; tune again")
    from cmr_bench.hparams import validate_config

    stored = validate_config(cls, stored, f"tuned config {path}")  # each value as the method declares it
    defaults = cls.resolve_config({}, dataset=name)
    norm = lambda v: json.loads(json.dumps(v, default=list))  # noqa: E731  (TOML has no tuples)
    picked = set(tuned.get("tuned", []))
    stale = sorted(k for k in stored if k not in picked and norm(stored[k]) != norm(defaults[k]))
    if stale:
        raise CmrBenchError(f"tuned config {path}: {method}'s default for {', '.join(stale)} changed since tuning "
                            f"({stale[0]} = {stored[stale[0]]!r} there, {defaults[stale[0]]!r} now); tune again")
    return cls.resolve_config({k: stored[k] for k in stored}, dataset=name, where=f"tuned config {path}")


def tuned_record(method: str, dataset, bits: int | None = None, tuned_dir=None) -> dict:
    """What a run records about its tuned config: the file and how the config was found."""
    from cmr_bench.registry import get_method

    binary = get_method(method).code_type == "binary"
    path = tuned_path(method, dataset if isinstance(dataset, str) else dataset.name, bits if binary else None, tuned_dir)
    tuned = read_tuned(path)
    import hashlib

    keep = ("value", "trials", "budget", "sampler", "seed", "val_fraction", "version", "objective", "jobs")
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            **{k: tuned[k] for k in keep if k in tuned}}
