"""Building blocks shared by the built-in plugins (not a plugin itself)."""

from __future__ import annotations

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
