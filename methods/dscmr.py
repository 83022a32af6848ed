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

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import Modal, SharedTrunk
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import Batch, TorchMethod, label_similarity


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
class DSCMR(TorchMethod):
    name = "dscmr"
    code_type = "real"
    uses_validation = True
    schedule = "epochs"
    info = MethodInfo(
        display_name="DSCMR",
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
        ),
    )
    # tune searches: the two loss weights the paper tunes, lr, width, length
    params = {
        "hidden": Param(2048, low=1, smoke=32,
            doc="ImgNN / TextNN output (official IDCM_NN img_output_dim / text_output_dim)"),
        "common": Param(1024, low=1, search=("choice", [256, 512, 1024]), smoke=16,
            doc="common representation (official minus_one_dim)"),
        "alpha": Param(0.001, low=0.0, search=("logfloat", 0.0001, 1.0), doc="weight of J2 (official main.py)"),
        "beta": Param(0.1, low=0.0, search=("logfloat", 0.001, 1.0), doc="weight of J3 (official main.py)"),
        "lr": Param(0.0001, low=0.0, search=("logfloat", 1e-05, 0.001), doc="learning rate"),
        "betas": Param([0.5, 0.999], item=float, low=0.0, high=1.0, length=2, doc="Adam betas"),
        "batch_size": Param(100, low=1, smoke=16, doc="minibatch size"),
        "epochs": Param(500, low=1, high=MAX_EPOCHS, search=("int", 20, 500), smoke=2,
            doc="official train_model default (main.py's MAX_EPOCH never reaches it)"),
        "select_on_validation": Param(True, doc="keep the epoch with the best validation score"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return DSCMRNet({"image": self.image_dim, "text": self.text_dim}, c["hidden"], c["common"], self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net.encoder, modality)

    def loss(self, batch: Batch):
        c, v, t, y = self.config, batch.x["image"], batch.x["text"], batch.y
        fv, pv = self.net(v, "image")
        ft, pt = self.net(t, "text")
        j1 = (pv - y).norm(dim=1).mean() + (pt - y).norm(dim=1).mean()
        s = label_similarity(y, y)
        j2 = pair_nll(half_cosine(fv, fv), s) + pair_nll(half_cosine(fv, ft), s) + pair_nll(half_cosine(ft, ft), s)
        j3 = (fv - ft).norm(dim=1).mean()
        total = j1 + c["alpha"] * j2 + c["beta"] * j3
        return total, {"J": total, "J1": j1, "J2": j2, "J3": j3}
