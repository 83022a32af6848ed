"""Building blocks shared by the built-in plugins (not a plugin itself)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def mlp(dims: list[int], *, final_activation: bool = True, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected stack d0 -> d1 -> ... with ReLU after every layer (or all but the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        last = i == len(dims) - 2
        if not last or final_activation:
            layers.append(nn.ReLU())
            if dropout and not last:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by -weight backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, weight)


def to_tensor(array: np.ndarray, device: str, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


def one_hot_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Single-label int vector -> one-hot float32; multi-hot passes through as float32."""
    if labels.ndim == 2:
        return labels.astype(np.float32)
    return np.eye(num_classes, dtype=np.float32)[labels]


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Index batches of one shuffled epoch (the last partial batch kept)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def encode_in_batches(module: nn.Module, features: np.ndarray, device: str, batch_size: int = 4096) -> np.ndarray:
    module.eval()
    out = [module(to_tensor(features[i : i + batch_size], device)).float().cpu() for i in range(0, len(features), batch_size)]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


# --- added for the real-valued deep methods (SDCMR, DSCMR, ACMR, P3S, beta-VAE, SDGZSL) ------------
# Everything below is additive: the helpers above keep their signatures.

@contextlib.contextmanager
def seeded(seed: int):
    """Run a block (typically network construction) under its own torch seed, leaving the
    global generator as it was: the weights then depend on the run's seed alone, whatever
    was drawn before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def adam(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, fused when this torch build supports it for the parameters' device (same update
    rule, 3-4x faster on CPU for multi-million-parameter MLPs)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def batch_stream(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatches of row indices: shuffled epochs, a last partial batch dropped when the
    split holds at least one full batch (so every step sees `batch_size` pairs)."""
    batch_size = max(1, min(int(batch_size), n))
    while True:
        order = torch.randperm(n, generator=generator)
        stop = n - n % batch_size if n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield order[start : start + batch_size]


def label_targets(labels: np.ndarray, num_classes: int, device: str) -> torch.Tensor:
    """Labels as a float (n, c) one-hot / multi-hot tensor on `device`."""
    return to_tensor(one_hot_labels(np.asarray(labels), num_classes), device)


def label_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy of class logits: softmax CE for single-label targets (one-hot rows),
    binary cross-entropy with logits (mean over classes) for multi-hot targets."""
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return nn.functional.cross_entropy(logits, targets.argmax(1))


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when items i and j share at least one label (one-hot or multi-hot rows)."""
    return (a @ b.t() > 0).to(a.dtype)


def modality_targets(n: int, modality: str, device: str) -> torch.Tensor:
    """Modality class index of n items: image 0, text 1."""
    return torch.full((n,), 0 if modality == "image" else 1, dtype=torch.long, device=device)


class GaussianHead(nn.Module):
    """Linear heads of a diagonal Gaussian posterior: input -> (mu, logvar) of size k."""

    def __init__(self, in_dim: int, k: int):
        super().__init__()
        self.mu = nn.Linear(in_dim, k)
        self.logvar = nn.Linear(in_dim, k)

    def forward(self, h):
        return self.mu(h), self.logvar(h)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) drawn from `generator` (the run's own stream)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp logvar)) || N(0, I)), summed over latent dimensions, mean over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


class SharedTrunk(nn.Module):
    """A modality-specific first layer (d_m -> first_dim, ReLU) followed by layers whose weights
    all modalities share (`trunk`), as SDCMR's E_s (Eqs. 5-6) and DSCMR's weight sharing."""

    def __init__(self, in_dims: dict[str, int], first_dim: int, trunk: nn.Module):
        super().__init__()
        self.first = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, first_dim), nn.ReLU()) for m, d in in_dims.items()})
        self.trunk = trunk

    def forward(self, x: torch.Tensor, modality: str):
        return self.trunk(self.first[modality](x))


def vae_encoder(in_dim: int, hidden: list[int], k: int) -> nn.Sequential:
    """[in -> hidden...] with ReLU, then linear (mu, logvar) heads of size k."""
    return nn.Sequential(mlp([in_dim, *hidden]), GaussianHead(hidden[-1], k))


def shared_encoder(in_dims: dict[str, int], hidden: list[int], k: int, gaussian: bool = False) -> SharedTrunk:
    """[d_m -> hidden[0]] per modality, then shared [hidden[0] -> ... -> hidden[-1]] (ReLU) and a
    shared head: linear to k, or Gaussian (mu, logvar) heads of size k when `gaussian`."""
    head = GaussianHead(hidden[-1], k) if gaussian else nn.Linear(hidden[-1], k)
    return SharedTrunk(in_dims, hidden[0], nn.Sequential(mlp(list(hidden)), head))


def mlp_decoder(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    """[in -> reversed(hidden) -> out]: the mirror of an encoder; ReLU after the hidden layers,
    linear output."""
    return mlp([in_dim, *reversed(list(hidden)), out_dim], final_activation=False)


def classifier_head(k: int, n_out: int, hidden: int | None = None) -> nn.Sequential:
    """[k -> hidden -> n_out] with ReLU (hidden defaults to k/2, SDCMR's C^s / C^u); hidden=0 gives
    a single linear layer."""
    hidden = max(k // 2, 1) if hidden is None else hidden
    dims = [k, hidden, n_out] if hidden else [k, n_out]
    return mlp(dims, final_activation=False)


class Modal(nn.Module):
    """Wraps a two-argument module f(x, modality) as a one-argument module for one modality
    (so that encode_in_batches can drive it)."""

    def __init__(self, module: nn.Module, modality: str, output: int | None = None):
        super().__init__()
        self.module, self.modality, self.output = module, modality, output

    def forward(self, x):
        out = self.module(x, self.modality)
        return out[self.output] if self.output is not None else out


def frobenius(matrix: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||A||_F with a gradient that stays finite at A = 0."""
    return torch.sqrt(matrix.pow(2).sum() + eps)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation factor 2 / (1 + exp(-gamma * p)) - 1 for training progress p in [0, 1]."""
    return float(2.0 / (1.0 + np.exp(-gamma * progress)) - 1.0)


def cosine_map(query: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
    """Mean average precision over all returns under cosine similarity (relevant = shares at
    least one label). Used only for model selection on a validation split inside fit();
    the benchmark's scores come from cmr_bench.evaluation."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    sims = q @ g.T
    if query_labels.ndim == 1:
        relevant = query_labels[:, None] == gallery_labels[None, :]
    else:
        relevant = (query_labels @ gallery_labels.T) > 0
    aps = []
    for i in range(len(q)):
        rel = relevant[i][np.argsort(-sims[i], kind="stable")]
        hits = np.cumsum(rel)
        if hits[-1] == 0:
            aps.append(0.0)
            continue
        ranks = np.flatnonzero(rel) + 1
        aps.append(float(np.mean(hits[rel] / ranks)))
    return float(np.mean(aps)) if aps else 0.0


def module_state(module: nn.Module) -> dict:
    """A module's tensors, detached and on the CPU (a portable state for state_dict())."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class InputNorm(nn.Module):
    """Per-modality feature standardisation (x - mean) / std with statistics stored as buffers
    (identity until set), so that it travels with state_dict()."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        for m, d in dims.items():
            self.register_buffer(f"{m}_mean", torch.zeros(d))
            self.register_buffer(f"{m}_std", torch.ones(d))

    def set(self, modality: str, features: torch.Tensor) -> None:
        getattr(self, f"{modality}_mean").copy_(features.mean(0))
        getattr(self, f"{modality}_std").copy_(features.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return (x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")


class TorchMethod:
    """Mixin for torch plugins (combine as `class X(TorchMethod, Method)`): builds `self.net`
    under the run's seed in __init__ (so a fresh instance + load_state_dict encodes exactly
    like the trained one), keeps it on `self.device`, encodes in eval mode without gradients,
    and round-trips the weights through state_dict().

    Every plugin using it accepts the config key `standardize` (add it to `defaults`; the
    real-valued plugins default to true, false keeps raw inputs): true z-scores each feature with
    training-split statistics, stored with the weights and applied again at encode time."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.multilabel = self.label_kind == "multi"
        with seeded(self.seed):
            self.net = self.build().to(self.device)
        self.net.input_norm = InputNorm({"image": self.image_dim, "text": self.text_dim}).to(self.device)

    def prepare_inputs(self, split) -> dict[str, torch.Tensor]:
        """The split's features as tensors on the device, standardised when config asks for it
        (the statistics are taken from this split, the training split)."""
        x = {m: to_tensor(split.features(m), self.device) for m in ("image", "text")}
        if self.config.get("standardize"):
            with torch.no_grad():
                for m in x:
                    self.net.input_norm.set(m, x[m])
                    x[m] = self.net.input_norm(x[m], m)
        return x

    # to implement: the networks, and the module mapping one modality's features to codes
    def build(self) -> nn.Module:
        raise NotImplementedError

    def encoder(self, modality: str) -> nn.Module:
        raise NotImplementedError

    def generators(self) -> tuple[torch.Generator, torch.Generator]:
        """(CPU generator for batch order, device generator for sampling noise), both from the seed."""
        order = torch.Generator().manual_seed(int(self.seed))
        noise = torch.Generator(device=self.device).manual_seed(int(self.seed) + 1)
        return order, noise

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        if modality not in ("image", "text"):
            raise ValueError(f"unknown modality '{modality}' (image or text)")
        module = _Normalised(self.net.input_norm, self.encoder(modality), modality)
        if len(features) == 0:
            with torch.no_grad():
                module.eval()
                width = module(torch.zeros(1, features.shape[1], device=self.device)).shape[1]
            return np.zeros((0, width), np.float32)
        return encode_in_batches(module, np.asarray(features), self.device)

    def state_dict(self) -> dict:
        return {"net": module_state(self.net)}

    # `net.input_norm` is an identity unless `standardize` was set when fitting.

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.net.to(self.device)


class _Normalised(nn.Module):
    def __init__(self, norm: InputNorm, encoder: nn.Module, modality: str):
        super().__init__()
        self.norm, self.encoder, self.modality = norm, encoder, modality

    def forward(self, x):
        return self.encoder(self.norm(x, self.modality))
