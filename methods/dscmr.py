"""DSCMR: Deep Supervised Cross-Modal Retrieval (Zhen, Hu, Wang, Peng; CVPR 2019).
Official PyTorch code: github.com/penghu-cs/DSCMR (model.py, train_model.py, main.py).

Network (official model.py): per modality one fc layer d_m -> 2048 with ReLU (ImgNN / TextNN),
then a linear layer 2048 -> 1024 whose weights both modalities share (the common representation
u, v), then a linear label classifier 1024 -> c, also shared (the label-space predictions).

Losses (paper Sec. 3; official calc_loss):
  J1  discrimination in the label space: mean_i ||P^T u_i - y_i||_2 + mean_i ||P^T v_i - y_i||_2
  J2  discrimination in the common space: the negative log-likelihood of the pairwise label
      similarity S_ij (share >= 1 label) under sigma(Gamma_ij), Gamma_ij = cos(a_i, b_j) / 2,
      for the image-image, image-text and text-text pairs of the minibatch:
      mean_ij [log(1 + exp Gamma_ij) - S_ij Gamma_ij], summed over the three pair types
  J3  modality invariance: mean_i ||u_i - v_i||_2
  J = J1 + alpha J2 + beta J3 with alpha = 1e-3, beta = 1e-1 (official main.py)
Training: Adam (lr 1e-4, betas (0.5, 0.999)), batch 100, 500 epochs (official defaults).
Retrieval: cosine similarity of the common representations.

Model selection: the official code evaluates the test set after every epoch and keeps the
weights of the epoch with the best test mAP. Here the runner's validation split (carved from
the training split) plays that role: after every epoch both retrieval directions are scored
on it (cosine, all returns) and the best epoch's weights are kept. Without a validation split
the last epoch is kept.

J1 regresses the label vector directly, so it serves multi-hot labels unchanged; the official
code builds S from a dot product of label vectors (a count for multi-hot rows), here S is the
indicator "share at least one label", which is the same for single-label data.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.data.types import Split
from cmr_bench.methods._blocks import (
    Modal,
    SharedTrunk,
    TorchMethod,
    adam,
    cosine_map,
    label_similarity,
    label_targets,
    minibatches,
)
from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.registry import register_method


class DSCMRNet(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int, common: int, num_classes: int):
        super().__init__()
        # ImgNN / TextNN (fc + ReLU, per modality), then the shared linearLayer.
        self.encoder = SharedTrunk(dims, hidden, nn.Linear(hidden, common))
        self.classifier = nn.Linear(common, num_classes)  # shared linearLayer2

    def forward(self, x: torch.Tensor, modality: str):
        feature = self.encoder(x, modality)
        return feature, self.classifier(feature)


def half_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gamma_ij = cos(a_i, b_j) / 2 (the official code's `cos`, norms clamped at 1e-6)."""
    norms = a.norm(dim=1, keepdim=True) @ b.norm(dim=1, keepdim=True).t()
    return (a @ b.t()) / norms.clamp(min=1e-6) / 2.0


def pair_nll(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """mean_ij log(1 + exp theta_ij) - S_ij theta_ij."""
    return (F.softplus(theta) - s * theta).mean()


@register_method
class DSCMR(TorchMethod, Method):
    name = "dscmr"
    code_type = "real"
    uses_validation = True
    info = MethodInfo(
        full_name="Deep Supervised Cross-Modal Retrieval",
        paper="L. Zhen, P. Hu, X. Wang, D. Peng, Deep Supervised Cross-Modal Retrieval",
        venue="CVPR",
        year=2019,
        code_url="https://github.com/penghu-cs/DSCMR",
        status="faithful",
        supervision="supervised",
        deviations=(
            "The official code keeps the epoch with the best mAP on the TEST set; here the best epoch is chosen on the validation split the runner carves from the training split (the last epoch when none is given).",
            "Minibatches are reshuffled every epoch (the official loader iterates the training set in a fixed order).",
            "The pairwise similarity S_ij is 'share at least one label' (the official code uses the label dot product, identical for single-label data, a count for multi-hot rows).",
            "Inputs are z-scored with training-split statistics by default (standardize=true; the paper feeds raw features), a choice made on a validation split carved from Wikipedia's training set (docs/methods.md) and shared with the hashing plugins; standardize=false gives raw inputs.",
        ),
    )
    defaults = {
        "hidden": 2048,  # ImgNN / TextNN output (official IDCM_NN img_output_dim / text_output_dim)
        "common": 1024,  # common representation (official minus_one_dim)
        "alpha": 1e-3,  # weight of J2 (official main.py)
        "beta": 1e-1,  # weight of J3 (official main.py)
        "lr": 1e-4,
        "betas": [0.5, 0.999],
        "batch_size": 100,
        "epochs": 500,  # official train_model default (main.py's MAX_EPOCH never reaches it)
        "select_on_validation": True,
        "standardize": True,  # z-score inputs with training statistics (false: raw features, as the paper)
    }
    dataset_defaults = {}
    smoke_config = {"epochs": 2, "hidden": 32, "common": 16, "batch_size": 16}

    def build(self) -> nn.Module:
        c = self.config
        return DSCMRNet({"image": self.image_dim, "text": self.text_dim}, int(c["hidden"]), int(c["common"]), self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net.encoder, modality)

    def losses(self, v: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        c = self.config
        fv, pv = self.net(v, "image")
        ft, pt = self.net(t, "text")
        j1 = (pv - y).norm(dim=1).mean() + (pt - y).norm(dim=1).mean()
        s = label_similarity(y, y)
        j2 = pair_nll(half_cosine(fv, fv), s) + pair_nll(half_cosine(fv, ft), s) + pair_nll(half_cosine(ft, ft), s)
        j3 = (fv - ft).norm(dim=1).mean()
        total = j1 + float(c["alpha"]) * j2 + float(c["beta"]) * j3
        return total, {"J": total.item(), "J1": j1.item(), "J2": j2.item(), "J3": j3.item()}

    def _validation_map(self, val: Split) -> tuple[float, float]:
        ci, ct = self.encode(val.image, "image"), self.encode(val.text, "text")
        return cosine_map(ci, ct, val.labels, val.labels), cosine_map(ct, ci, val.labels, val.labels)

    def fit(self, train: Split, val: Split | None = None) -> list[dict[str, float]]:
        c = self.config
        x_all = self.prepare_inputs(train)
        v_all, t_all = x_all["image"], x_all["text"]
        y_all = label_targets(train.labels, self.num_classes, self.device)
        order, _ = self.generators()
        optimizer = adam(self.net.parameters(), lr=float(c["lr"]), betas=tuple(c["betas"]))
        select = bool(c["select_on_validation"]) and val is not None and len(val) > 0
        best, best_state, best_epoch = -np.inf, None, 0
        log, start = [], time.perf_counter()
        for epoch in range(int(c["epochs"])):
            self.net.train()
            sums, batches = {}, 0
            for idx in minibatches(len(train), int(c["batch_size"]), order):
                idx = idx.to(self.device)
                loss, row = self.losses(v_all[idx], t_all[idx], y_all[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in row.items():
                    sums[key] = sums.get(key, 0.0) + value
                batches += 1
            entry = {"epoch": epoch + 1, **{key: value / max(batches, 1) for key, value in sums.items()}}
            if select:
                i2t, t2i = self._validation_map(val)
                entry.update(val_map_i2t=i2t, val_map_t2i=t2i)
                if (i2t + t2i) / 2 > best:
                    best, best_epoch = (i2t + t2i) / 2, epoch + 1
                    best_state = copy.deepcopy(self.net.state_dict())
            log.append(entry)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        if log:
            log[-1].update(selected_epoch=float(best_epoch if best_state is not None else len(log)),
                           fit_seconds=time.perf_counter() - start)
        return log
