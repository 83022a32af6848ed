"""Network building blocks shared by the built-in torch plugins (not a plugin itself); the
training loop and its helpers are in cmr_bench/trainer.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmr_bench.trainer import adam


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


def label_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy of class logits: softmax CE for single-label targets (one-hot rows),
    binary cross-entropy with logits (mean over classes) for multi-hot targets."""
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return nn.functional.cross_entropy(logits, targets.argmax(1))


def discriminator(in_dim: int, hidden: int) -> nn.Sequential:
    """Real/fake critic of the adversarial methods (CM-GAN, TANSS, CAAL): one hidden LeakyReLU layer, a logit."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """GAN loss of logits against all-real or all-fake targets."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


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


def image_backbone(name: str, image_dim: int) -> tuple[nn.Module, int]:
    """The seam for a raw-pixel image backbone. Only "features" exists for now: the benchmark
    files carry precomputed feature vectors, so the backbone is the identity and the method's
    own MLP starts from the feature vector. A CNN backbone would return (module, out_dim)
    here and take images instead."""
    if name == "features":
        return nn.Identity(), int(image_dim)
    raise NotImplementedError(
        f"image_backbone '{name}': only 'features' (precomputed feature vectors) is implemented"
    )


def unique_rows(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct rows of a label matrix, the row -> distinct-row index, and each one's count."""
    uniq, inverse, counts = torch.unique(y, dim=0, return_inverse=True, return_counts=True)
    return uniq, inverse, counts.to(y.dtype)


# --- autoencoder pieces shared by Corr-AE and CMDN (CMDN's second level is a Corr-AE) --------

CORR_AE_VARIANTS = ("corr", "cross", "full")


def sigmoid_mlp(dims: list[int], final_activation: bool = True) -> nn.Sequential:
    """Fully connected stack with logistic units (the autoencoders of Corr-AE / CMDN)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or final_activation:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def sq_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean_i ||a_i - b_i||^2 (summed over dimensions, averaged over the batch)."""
    return (a - b).pow(2).sum(1).mean()


def correspondence_loss(code_i: torch.Tensor, code_t: torch.Tensor, x_i: torch.Tensor, x_t: torch.Tensor,
                        decode_i, decode_t, alpha: float, variant: str = "corr") -> dict[str, torch.Tensor]:
    """The Corr-AE objective of one minibatch, (1 - alpha)(L_I + L_T) + alpha L_C, for one of the
    three variants (methods/corr_ae.py describes them)."""
    if variant == "corr":
        l_i, l_t = sq_err(decode_i(code_i), x_i), sq_err(decode_t(code_t), x_t)
    elif variant == "cross":
        l_i, l_t = sq_err(decode_i(code_t), x_i), sq_err(decode_t(code_i), x_t)
    elif variant == "full":
        l_i = sq_err(decode_i(code_i), x_i) + sq_err(decode_i(code_t), x_i)
        l_t = sq_err(decode_t(code_t), x_t) + sq_err(decode_t(code_i), x_t)
    else:
        raise ValueError(f"Corr-AE variant must be one of {CORR_AE_VARIANTS}, got {variant!r}")
    l_c = sq_err(code_i, code_t)
    total = (1.0 - alpha) * (l_i + l_t) + alpha * l_c
    return {"L": total, "L_I": l_i, "L_T": l_t, "L_C": l_c}


def side_optimizers(config: dict, **sides) -> dict[str, torch.optim.Optimizer]:
    """One Adam per side of an alternating (adversarial) game: `name=(parameters, lr_key)`, the
    learning rate read from config[lr_key], the config's betas for every side."""
    betas = config["betas"]
    return {name: adam(params, config[lr_key], betas) for name, (params, lr_key) in sides.items()}
