"""The method plugin interface. A plugin learns (`fit`) and encodes (`encode`); it never
scores, never sees the query/test split while training, and never touches files: the runner
owns data, seeds, devices, storage and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cmr_bench.data.types import Split
from cmr_bench.hooks import NO_HOOKS, TrainHooks
from cmr_bench.hparams import Param, from_legacy, validate_config

CODE_TYPES = ("real", "binary")

# One status vocabulary (`list methods`, the README legend, table notes, the report):
# MethodInfo.status is one of these keys.
STATUS_MEANING = {
    "faithful": "from the paper's full description and its official code (minor deviations listed)",
    "modified": "from the paper and its official code, but the default objective departs from the paper's in "
                "named ways chosen on validation; the paper's form runs as its own variant row",
    "re-implementation": "from the paper's full description; no official code consulted or available",
    "partial": "from the paper's full description with major parts left out (named in its deviations)",
    "from abstract": "an approximation built from the paper's abstract; its full text was not available",
    "baseline": "a reference point, not a published method",
}


@dataclass(frozen=True)
class MethodInfo:
    """Metadata shown in `cmr-bench list methods` and in the tables."""

    full_name: str
    paper: str
    venue: str
    year: int
    code_url: str | None = None
    status: str = "faithful"  # one of STATUS_MEANING
    supervision: str = "supervised"  # or "unsupervised"
    # Every deliberate deviation from the paper / official code, one sentence each.
    deviations: tuple[str, ...] = field(default_factory=tuple)
    # The name as papers print it in tables and legends ("β-VAE", "JFSSL"); "" = the plugin name.
    display_name: str = ""


class Method:
    """Base class of every method plugin.

    Subclasses set the class attributes and implement fit and encode; torch methods subclass
    cmr_bench.trainer.TorchMethod instead, which implements them. The runner resolves the
    config once (`resolve_config`: `defaults`, then `dataset_defaults[dataset]`, then the
    user's `--set key=value`, validated against `params`), seeds python, numpy and torch with
    the run's seed, and builds one instance per run (`create`); the instance receives that
    config with every value in its declared type.

    `state_dict` / `load_state_dict` are optional: the runner never stores models (a run is
    reproduced from its config and seed), so they serve users who want to keep a fitted model.
    Where a plugin implements them, the conformance checks require a faithful round trip.
    """

    name: ClassVar[str] = ""
    code_type: ClassVar[str] = "real"  # "real" (cosine ranking) or "binary" (±1 codes, Hamming)
    info: ClassVar[MethodInfo]
    # The contract: every hyperparameter declared once (cmr_bench.hparams.Param: default, type,
    # range or choices, tune search range, smoke value, doc). Values reaching the method pass
    # cmr_bench.hparams.validate_config, so `self.config` holds them in the declared type.
    params: ClassVar[dict[str, Param]] = {}
    # Derived from `params` when the class is made (read them, do not declare them): the
    # defaults, the allowed values of string hyperparameters, `cmr-bench tune`'s search space
    # and the conformance checks' overrides that make fit() fast on tiny data (never used for
    # reported numbers). A plugin written before `params` may still declare these four instead.
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    search_space: ClassVar[dict[str, tuple]] = {}
    smoke_config: ClassVar[dict[str, Any]] = {}
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # Named config overrides (ablations, e.g. {"w/o L_rec": {"alpha": 0.0}}), run with --variants.
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    # Variants that are rows of their own in the result tables (the paper's form of a method whose
    # default departs from it); the others are ablations.
    row_variants: ClassVar[tuple[str, ...]] = ()
    # True: fit() receives a validation split carved from train (and train without it).
    uses_validation: ClassVar[bool] = False
    # False keeps the method out of `--methods all` (e.g. the label oracle).
    in_all: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "params" in own:
            legacy = [n for n in ("defaults", "choices", "search_space", "smoke_config") if n in own]
            if legacy:
                raise TypeError(f"method '{cls.name}' declares `params` and also {', '.join(legacy)}: declare each hyperparameter once, in `params`")
        elif any(n in own for n in ("defaults", "choices", "search_space", "smoke_config")):  # written before `params`
            cls.params = from_legacy(cls)
        else:
            return
        cls.defaults = {k: p.default for k, p in cls.params.items()}
        cls.choices = {k: p.choices for k, p in cls.params.items() if p.choices is not None}
        cls.search_space = {k: p.search for k, p in cls.params.items() if p.search is not None}
        cls.smoke_config = {k: p.smoke for k, p in cls.params.items() if p.has_smoke}

    @classmethod
    def check_config(cls, config: dict[str, Any], **dims: int) -> None:
        """Optional: refuse a combination of values no single declaration can express (e.g. a
        stage longer than the whole schedule) by raising ValueError with one sentence; called
        before the grid runs, so the user sees one line instead of a failed run. `dims`: the
        dataset's image_dim, text_dim and num_classes."""

    def __init__(
        self,
        *,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        label_kind: str = "single",
        config: dict[str, Any] | None = None,
        bits: int | None = None,
        device: str = "cpu",
        seed: int = 0,
    ):
        self.image_dim, self.text_dim = int(image_dim), int(text_dim)
        self.num_classes, self.label_kind = int(num_classes), label_kind
        # Resolved by the caller (the runner, once); None means the defaults. Validated again here
        # so that a method reads its values in the declared type wherever it was made.
        self.config = validate_config(type(self), dict(self.defaults) if config is None else dict(config), "config")
        self.bits = bits
        self.device = device
        self.seed = seed
        self.hooks: TrainHooks = NO_HOOKS  # progress and validation callbacks, set by the runner or `tune` before fit

    @classmethod
    def resolve_config(cls, overrides: dict[str, Any], dataset: str | None = None, where: str = "config") -> dict[str, Any]:
        """defaults <- dataset_defaults[dataset] <- overrides, validated (validate_config): unknown
        keys and values the declarations refuse are a one-line error."""
        config = dict(cls.defaults)
        if dataset is not None:
            config.update(cls.dataset_defaults.get(dataset, {}))
        config.update(overrides)
        return validate_config(cls, config, where)

    @classmethod
    def create(cls, *, seed: int = 0, **kwargs) -> "Method":
        """The one way the runner and the conformance checks make an instance: every random
        generator (python, numpy, torch) seeded with the run's seed, then the constructor."""
        from cmr_bench.seeding import seed_everything

        seed_everything(seed)
        return cls(seed=seed, **kwargs)

    def notes(self) -> list[str]:
        """Sentences the runner records in run.json (e.g. how inputs were preprocessed)."""
        return []

    # --- to implement -------------------------------------------------------------------
    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        """Learn from the training pairs; return the training log (one dict per step/epoch)."""
        raise NotImplementedError

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        """Map features of one modality ('image' or 'text') to codes, one row per item.
        Real methods return float32; binary methods return ±1 (float32) of length `bits`."""
        raise NotImplementedError

    # --- optional -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything encode() needs, as plain tensors/arrays (optional, see the class docstring)."""
        raise NotImplementedError(f"method '{self.name}' does not save its state")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"method '{self.name}' does not load a saved state")
