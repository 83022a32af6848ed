"""The one training loop of every torch method plugin, real-valued or binary.

A plugin subclasses `TorchMethod` and supplies its networks (`build`), the module that maps one
modality's standardised features to codes (`encoder`), and its loss on a minibatch (`loss`);
binary plugins may replace the quantisation (`quantize`, default sign with sign(0) = +1). The
trainer owns everything else: inputs and their standardisation, the run's random streams,
device placement, batching, the optimiser step, the schedule (iterations or epochs), the
training log (one schema), progress and validation reports (`self.hooks`, cmr_bench/hooks.py),
and selection of the best epoch on validation through `cmr_bench.evaluate`.

Methods whose papers prescribe their own update order keep a hook for it, not a loop: override
`step(batch)` (several optimisers, alternating or per-block updates: `self.update(loss, *names)`
steps the named optimisers only) or, for schedules made of stages over the whole training set
(SSAH), `train_epoch()` with `self.epoch_batches()` and `self.update()`.

Log schema: one row per iteration (`schedule = "iterations"`, key `iteration`) or per epoch
(key `epoch`, terms averaged over the epoch's batches), counted from 1, plus what
`start_epoch` returns; `val_map_i2t`, `val_map_t2i` where validation ran and `selected_epoch` on
the last row of a selecting method, with `refit_epochs` and `refit_items` when it was then refitted
on the whole training split (`fit`). No timings: the runner measures fit time, once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from cmr_bench.data.splits import rejoin
from cmr_bench.data.types import Split, label_matrix  # noqa: F401 (methods import it from here)
from cmr_bench.plugin import Method

MODALITIES = ("image", "text")

# Recorded into run.json of every run that standardises its inputs (`TorchMethod.notes`).
STANDARDIZE_NOTE = (
    "Inputs are z-scored per dimension with training-split statistics (standardize=true; the "
    "papers feed raw features), a choice made on a validation split carved from Wikipedia's "
    "training set (docs/methods.md); standardize=false gives raw inputs."
)

# Recorded into run.json of every run that selects its epoch on validation (`TorchMethod.notes`).
REFIT_NOTE = (
    "The number of epochs was selected on a validation split carved from the training split; the "
    "model was then retrained from the same seed on the whole training split for that many epochs "
    "(logged as selected_epoch, refit_epochs, refit_items), so it has seen every training item, as "
    "every other row has."
)


# --- shared helpers -------------------------------------------------------------------------

def to_tensor(array: np.ndarray, device: str, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when items i and j share at least one label (one-hot or multi-hot rows)."""
    return (a @ b.t() > 0).to(a.dtype)


def adam(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, fused where this torch build supports it for the parameters' device (same update
    rule; 3-10x faster on CPU for the wide MLPs used here)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def epoch_batches(n: int, batch_size: int, generator: torch.Generator):
    """Index batches of one shuffled epoch (the last partial batch kept)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def batch_stream(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatches: shuffled epochs, the last partial batch dropped when the split holds
    at least one full batch (so every step sees `batch_size` pairs)."""
    batch_size = max(1, min(int(batch_size), n))
    while True:
        order = torch.randperm(n, generator=generator)
        stop = n - n % batch_size if n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield order[start : start + batch_size]


class Standardizer(nn.Module):
    """Per-modality z-scoring (x - mean) / std with training-split statistics kept as buffers
    (identity until fitted), so that it travels with the state."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        for m, d in dims.items():
            self.register_buffer(f"{m}_mean", torch.zeros(d))
            self.register_buffer(f"{m}_std", torch.ones(d))

    def fit(self, modality: str, features: torch.Tensor) -> None:
        getattr(self, f"{modality}_mean").copy_(features.mean(0))
        getattr(self, f"{modality}_std").copy_(features.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return (x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")


def sign_codes(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """±1 float32 codes with sign(0) = +1."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.where(np.asarray(x) >= 0, 1.0, -1.0).astype(np.float32)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """Torch ±1 sign with sign(0) = +1 (no gradient)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x)).detach()


# --- the trainer ----------------------------------------------------------------------------

class Averager:
    """Means of logged terms over steps, summed in float64 on the device (no host sync)."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            value = value.detach().double() if isinstance(value, torch.Tensor) else value
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def result(self, prefix: str = "") -> dict[str, Any]:
        return {prefix + key: value / max(self.count, 1) for key, value in self.sums.items()}


@dataclass
class Inputs:
    """The training split on the device: standardised features, label targets (None for
    unsupervised methods, which never read labels) and, on request, the raw features."""

    x: dict[str, torch.Tensor]
    y: torch.Tensor | None
    split: Split
    device: str
    _raw: dict[str, torch.Tensor] = field(default_factory=dict)

    def raw(self, modality: str) -> torch.Tensor:
        if modality not in self._raw:
            self._raw[modality] = to_tensor(self.split.features(modality), self.device)
        return self._raw[modality]

    def __len__(self) -> int:
        return len(self.split)


class Batch:
    """One minibatch: `x[m]` standardised features, `y` label targets (n, c) or None, `idx` the
    rows in the training split; `raw(m)` the unstandardised features of those rows."""

    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor | None, idx: torch.Tensor | None = None,
                 raw: Callable[[str], torch.Tensor] | None = None):
        self.x, self.y, self.idx, self._raw = x, y, idx, raw

    @classmethod
    def rows(cls, inputs: Inputs, idx: torch.Tensor) -> "Batch":
        return cls({m: inputs.x[m][idx] for m in MODALITIES}, None if inputs.y is None else inputs.y[idx], idx,
                   lambda m: inputs.raw(m)[idx])

    def raw(self, modality: str) -> torch.Tensor:
        if self._raw is None:
            raise ValueError("this batch carries no raw features")
        return self._raw(modality)

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))


class TorchMethod(Method):
    """Base of every torch plugin (see the module docstring). Subclasses set `schedule` and put
    its length (`iterations` or `epochs`), `batch_size`, `lr` and `standardize` in `defaults`."""

    schedule: ClassVar[str] = "iterations"  # or "epochs": the config key holding the length
    drop_last: ClassVar[bool] = False  # epochs: skip an epoch's last partial batch (unless it is the only one)
    min_batch: ClassVar[int] = 1  # epochs: skip batches smaller than this

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.multilabel = self.label_kind == "multi"
        # Refit on train + validation after selecting the epoch (fit); `tune` sets it False.
        self.refit_after_selection = True
        # Stop after this many steps of the configured schedule (None: all of it); set for a refit.
        self.stop_after: int | None = None
        if self.code_type == "binary":
            if self.bits is None or int(self.bits) <= 0:
                raise ValueError(f"method '{self.name}' needs a positive code length (bits), got {self.bits}")
            self.bits = int(self.bits)
        # Weights come from the global torch generator, which Method.create has just seeded
        # with the run's seed (the one seeding layer).
        net = self.build()
        self.net = (nn.ModuleDict(net) if isinstance(net, dict) else net).to(self.device)
        self.standardizer = Standardizer({"image": self.image_dim, "text": self.text_dim}).to(self.device)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def notes(self) -> list[str]:
        return ([STANDARDIZE_NOTE] if self.config.get("standardize") else []) + (
            [REFIT_NOTE] if self.config.get("select_on_validation") and self.uses_validation else [])

    # --- to implement ---------------------------------------------------------------------
    def build(self) -> nn.Module | dict[str, nn.Module]:
        raise NotImplementedError

    def encoder(self, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Maps standardised features of `modality` to codes (binary: before quantisation)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """(objective to minimise, terms to log) on one minibatch."""
        raise NotImplementedError

    # --- hooks with defaults --------------------------------------------------------------
    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {"net": adam(self.net.parameters(), lr=float(c["lr"]), betas=c.get("betas", (0.9, 0.999)),
                            weight_decay=float(c.get("weight_decay", 0.0)))}

    def start_epoch(self) -> dict[str, Any]:
        """Called before each epoch / iteration; returns entries logged as they are."""
        return {}

    def step(self, batch: Batch) -> dict[str, Any]:
        objective, row = self.loss(batch)
        self.update(objective)
        return row

    def train_epoch(self) -> dict[str, Any]:
        """One epoch: `step` on each minibatch, the logged terms averaged."""
        mean = Averager()
        for idx in self.epoch_batches():
            mean.add(self.step(Batch.rows(self.inputs, idx.to(self.device))))
        return mean.result()

    def quantize(self, relaxed: np.ndarray) -> np.ndarray:
        return sign_codes(relaxed)

    # --- services for the hooks -----------------------------------------------------------
    def update(self, loss: torch.Tensor, *names: str) -> None:
        """zero_grad, backward, step for the named optimisers (all when none named)."""
        opts = [self.optimizers[n] for n in names] if names else list(self.optimizers.values())
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        self._last_loss = loss

    def update_routed(self, routes: list[tuple[torch.Tensor, Any]], *names: str, report: torch.Tensor | None = None) -> None:
        """Per-block gradients (a paper's own update equation per parameter block): `routes` is a
        list of (loss, parameters); each parameter's gradient is the sum over the losses routed
        to it, nothing else reaches it; then the named optimisers (all when none named) step.
        A loss that does not depend on the graph (a term switched off) is skipped."""
        opts = [self.optimizers[n] for n in names] if names else list(self.optimizers.values())
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        for loss, params in routes:
            params = [p for p in params if p.requires_grad]
            if not params or not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
        for opt in opts:
            opt.step()
        self._last_loss = report if report is not None else (routes[-1][0] if routes else None)

    def epoch_batches(self):
        """Index batches of one shuffled epoch from the run's batch-order stream."""
        n, bs, first = len(self.inputs), int(self.config["batch_size"]), True
        for idx in epoch_batches(n, bs, self.order):
            if len(idx) < self.min_batch or (self.drop_last and len(idx) < bs and not first):
                continue
            first = False
            yield idx

    # --- the loop -------------------------------------------------------------------------
    def prepare(self, split: Split) -> Inputs:
        x = {m: to_tensor(split.features(m), self.device) for m in MODALITIES}
        if self.config.get("standardize"):
            with torch.no_grad():
                for m in MODALITIES:
                    self.standardizer.fit(m, x[m])
                    x[m] = self.standardizer(x[m], m)
        y = None
        if self.info.supervision != "unsupervised":
            y = to_tensor(label_matrix(split.labels, self.num_classes), self.device)
        return Inputs(x, y, split, self.device)

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        """Train on `train`. A method that selects its epoch on `val` (carved from the training
        split) is then refitted from the same seed on train + val for the selected number of
        epochs, so that its final model, like every other row's, has seen every training item
        (logged as `refit_epochs` / `refit_items` on the last row). `refit_after_selection =
        False` keeps the selected weights: what `tune` sets, since it scores the model on `val`."""
        log = self._train(train, val, stop=self.stop_after)
        if self.refit_after_selection and self._selects(val) and log:
            epochs = int(log[-1]["selected_epoch"])
            full = rejoin(train, val)
            again = type(self).create(
                seed=self.seed, image_dim=self.image_dim, text_dim=self.text_dim, num_classes=self.num_classes,
                label_kind=self.label_kind, config=self.config, bits=self.bits, device=self.device)
            again.stop_after = epochs
            again.hooks = self.hooks  # the refit's progress is shown too (no validation: nothing for tune)
            again.fit(full, None)  # through the plugin's own fit, if it wraps this one
            self.load_state_dict(again.state_dict())
            self.net.eval()
            log[-1].update(refit_epochs=float(epochs), refit_items=float(len(full)))
        return log

    def _selects(self, val: Split | None) -> bool:
        return bool(self.config.get("select_on_validation")) and val is not None and len(val) > 0

    def _train(self, train: Split, val: Split | None, stop: int | None = None) -> list[dict[str, Any]]:
        """The loop: the schedule's length from the config (learning-rate schedules see it),
        run for `stop` steps when given (a refit), the best validation epoch kept when selecting."""
        c = self.config
        self.inputs = self.prepare(train)
        self.order = torch.Generator().manual_seed(int(self.seed))  # batch order
        self.noise = torch.Generator(device=self.device).manual_seed(int(self.seed) + 1)  # sampling noise
        self.optimizers = self.make_optimizers()
        self.total = int(c[self.schedule])
        unit = "iteration" if self.schedule == "iterations" else "epoch"
        select = self._selects(val)
        # A method that does not select on validation is still scored there for `tune`'s pruner
        # (about 10 times per fit, nothing logged, the model unchanged): no listener, no cost.
        watch = not select and val is not None and len(val) > 0 and self.hooks.wants_validation
        watch_every = max(1, self.total // 10)
        stream = batch_stream(len(train), int(c["batch_size"]), self.order) if unit == "iteration" else None
        best, best_state, best_at = -np.inf, None, 0
        self._last_loss = None
        log: list[dict[str, Any]] = []
        steps = self.total if stop is None else min(int(stop), self.total)
        for self.done in range(steps):
            self.net.train()
            row: dict[str, Any] = {unit: self.done + 1, **self.start_epoch()}
            terms = self.step(Batch.rows(self.inputs, next(stream).to(self.device))) if stream else self.train_epoch()
            row.update({k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in terms.items()})
            if select:
                i2t, t2i = self.validation_map(val)
                row.update(val_map_i2t=i2t, val_map_t2i=t2i)
                self.hooks.validation_score(self.done + 1, self._tune_score(val, (i2t + t2i) / 2))  # `tune` prunes on it
                if (i2t + t2i) / 2 > best:
                    best, best_at, best_state = (i2t + t2i) / 2, self.done + 1, copy.deepcopy(self.net.state_dict())
            elif watch and ((self.done + 1) % watch_every == 0 or self.done + 1 == self.total):
                self.hooks.validation_score(self.done + 1, self._tune_score(val))
            log.append(row)
            loss = self._last_loss
            self.hooks.training_step(self.done + 1, steps,
                                     float(loss.detach()) if loss is not None and self.device == "cpu" else None, unit)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        if "select_on_validation" in c and log:  # a selecting method: the last epoch without validation data
            log[-1]["selected_epoch"] = float(best_at if best_state is not None else len(log))
        self.inputs = None
        # One host sync for the whole log, not one per step.
        return [{k: float(v) if isinstance(v, torch.Tensor) else v for k, v in r.items()} for r in log]

    def validation_map(self, val: Split, database: Split | None = None) -> tuple[float, float]:
        """mAP@all of both directions, validation queries against `database` (default: the
        validation split itself), through the benchmark's evaluator."""
        from cmr_bench.evaluation import evaluate

        db = val if database is None else database
        q = {"image": self.encode(val.image, "image"), "text": self.encode(val.text, "text")}
        r = q if database is None else {"image": self.encode(db.image, "image"), "text": self.encode(db.text, "text")}
        similarity = "hamming" if self.code_type == "binary" else "cosine"
        scores = [evaluate(q[a], r[b], val.labels, db.labels, similarity=similarity, device=self.device)["map@all"]
                  for a, b in (("image", "text"), ("text", "image"))]
        return float(scores[0]), float(scores[1])

    def _tune_score(self, val: Split, own: float | None = None) -> float:
        """The score `tune` prunes on: its objective's database (hooks.validation_database) when it
        set one, else the validation split itself (`own`, when already computed)."""
        database = self.hooks.validation_database
        if database is None and own is not None:
            return own
        return float(np.mean(self.validation_map(val, database)))

    # --- encoding and state ---------------------------------------------------------------
    @torch.no_grad()
    def relaxed(self, features: np.ndarray, modality: str, batch_size: int = 4096) -> np.ndarray:
        """The encoder's continuous output, one row per item, in eval mode."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality '{modality}' (image or text)")
        features = np.asarray(features)
        dim = self.image_dim if modality == "image" else self.text_dim
        if features.ndim != 2 or features.shape[1] != dim:
            raise ValueError(f"{self.name}: {modality} features of shape {features.shape} do not match the model")
        self.net.eval()
        enc = self.encoder(modality)
        run = lambda x: enc(self.standardizer(to_tensor(x, self.device), modality)).float().cpu()  # noqa: E731
        if len(features) == 0:
            return np.zeros((0, run(np.zeros((1, dim), np.float32)).shape[1]), np.float32)
        out = [run(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
        return torch.cat(out).numpy().astype(np.float32)

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        codes = self.relaxed(features, modality)
        return self.quantize(codes) if self.code_type == "binary" else codes

    def state_dict(self) -> dict[str, Any]:
        tensors = lambda m: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}  # noqa: E731
        return {"net": tensors(self.net), "standardizer": tensors(self.standardizer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.standardizer.load_state_dict(state["standardizer"])
        self.net.to(self.device)
        self.standardizer.to(self.device)
