"""Shared pieces of the cross-modal hashing plugins (SSAH, DJSRH, SDEH); not a plugin itself.

`HashingMethod` owns what every binary plugin here does alike: checking the code length,
building the networks under the run's seed, per-dimension input standardisation fitted on the
training split, per-item encoding in eval mode with sign(0) = +1, and a state dict that
round-trips through plain tensors. Subclasses build their modules (`_build`) and train them
(`fit`); `_encoder(modality)` names the module that maps a standardised feature row to the
relaxed (tanh) code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cmr_bench.plugin import Method
from cmr_bench.methods._blocks import one_hot_labels, to_tensor

CODE_LENGTHS = (16, 32, 64, 128)
IMAGE_BACKBONES = ("features",)


def sign_codes(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """±1 float32 codes with sign(0) = +1."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.where(np.asarray(x) >= 0, 1.0, -1.0).astype(np.float32)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """Torch ±1 sign with sign(0) = +1 (no gradient)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x)).detach()


def label_matrix(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Single-label ints or multi-hot rows -> float32 multi-hot (n, c)."""
    return one_hot_labels(np.asarray(labels), num_classes)


def share_label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 iff rows i of `a` and j of `b` (multi-hot) share at least one label."""
    return (a @ b.t() > 0).to(a.dtype)


def cosine_label_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Graded label similarity in [0, 1]: cosine of the multi-hot vectors."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return a @ b.t()


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


class Standardizer(nn.Module):
    """Per-dimension z-scoring fitted on the training split (identity until fitted or when off)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: np.ndarray) -> None:
        x64 = np.asarray(x, dtype=np.float64)
        std = x64.std(0)
        std[std < 1e-8] = 1.0
        self.mean.copy_(torch.as_tensor(x64.mean(0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class HashingMethod(Method):
    """Common base of the binary plugins in this folder (see the module docstring)."""

    code_type = "binary"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.bits is None or int(self.bits) <= 0:
            raise ValueError(f"method '{self.name}' needs a positive code length (bits), got {self.bits}")
        self.bits = int(self.bits)
        backbone = str(self.config.get("image_backbone", "features"))
        if backbone not in IMAGE_BACKBONES:
            image_backbone(backbone, self.image_dim)  # raises NotImplementedError
        # Weights are drawn from a generator forked off the global one and seeded with the run's
        # seed, so two instances with the same seed start identically whatever ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self.nets = nn.ModuleDict(self._build())
            self._init_weights()
            self.nets["norm_image"] = Standardizer(self.image_dim)
            self.nets["norm_text"] = Standardizer(self.text_dim)
        self.nets.to(self.device)
        self.fitted = False

    # --- to implement in subclasses --------------------------------------------------------
    def _build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _init_weights(self) -> None:
        """Re-initialise the freshly built modules (under the run's seed); default: keep torch's."""

    def _encoder(self, modality: str) -> nn.Module:
        """Module mapping standardised features of `modality` to relaxed codes (n, bits)."""
        raise NotImplementedError

    # --- shared helpers ------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(self.seed))
        return g

    def _fit_inputs(self, train) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit the standardisers (when config input_norm == 'zscore') and return the standardised
        training features as tensors on the device."""
        if self.config.get("input_norm", "zscore") == "zscore":
            self.nets["norm_image"].fit(train.image)
            self.nets["norm_text"].fit(train.text)
        elif self.config.get("input_norm") not in ("none", None):
            raise ValueError(f"input_norm must be 'zscore' or 'none', got {self.config.get('input_norm')!r}")
        with torch.no_grad():
            x_img = self.nets["norm_image"](to_tensor(train.image, self.device))
            x_txt = self.nets["norm_text"](to_tensor(train.text, self.device))
        return x_img, x_txt

    def _labels(self, train) -> torch.Tensor:
        return to_tensor(label_matrix(train.labels, self.num_classes), self.device)

    def _check_modality(self, modality: str) -> None:
        if modality not in ("image", "text"):
            raise ValueError(f"unknown modality '{modality}' (image or text)")

    # --- Method interface --------------------------------------------------------------------
    @torch.no_grad()
    def relaxed(self, features: np.ndarray, modality: str, batch_size: int = 4096) -> np.ndarray:
        """Continuous codes (before the sign), one row per item, computed in eval mode."""
        self._check_modality(modality)
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != (self.image_dim if modality == "image" else self.text_dim):
            raise ValueError(f"{self.name}: {modality} features of shape {features.shape} do not match the model")
        self.nets.eval()
        norm = self.nets["norm_image" if modality == "image" else "norm_text"]
        enc = self._encoder(modality)
        out = [
            enc(norm(to_tensor(features[i : i + batch_size], self.device))).float().cpu()
            for i in range(0, len(features), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.bits), np.float32)

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        return sign_codes(self.relaxed(features, modality))

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "bits": self.bits,
            "config": dict(self.config),
            "fitted": self.fitted,
            "nets": {k: v.detach().cpu().clone() for k, v in self.nets.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method", self.name) != self.name:
            raise ValueError(f"state of method '{state.get('method')}' given to '{self.name}'")
        if int(state.get("bits", self.bits)) != self.bits:
            raise ValueError(f"state has {state.get('bits')} bits, this instance {self.bits}")
        self.nets.load_state_dict({k: torch.as_tensor(v) for k, v in state["nets"].items()})
        self.nets.to(self.device)
        self.fitted = bool(state.get("fitted", True))


def adam(params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Adam, fused where this torch supports it (about 10x faster on CPU for the 4096-wide
    layers used here; same update rule)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def unique_rows(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct rows of a label matrix, the row -> distinct-row index, and each one's count."""
    uniq, inverse, counts = torch.unique(y, dim=0, return_inverse=True, return_counts=True)
    return uniq, inverse, counts.to(y.dtype)
