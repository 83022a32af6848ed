"""MCSM: modality-specific cross-modal similarity measurement (Peng, Qi, Yuan; "Modality-specific
cross-modal similarity measurement with recurrent attention network", IEEE TIP 27(11), 2018).

RE-IMPLEMENTATION from the paper's description (no official code consulted).

Idea: instead of one common space, build one semantic space PER MODALITY and measure
cross-modal similarity in each, then fuse the two similarities.
  * Image-specific space: the image network N^I_I (the paper: recurrent attention over VGG
    region features) is trained to classify, giving the image semantic space; a text network
    N^I_T projects texts into that space, trained with the attention-based joint embedding
    loss (classification + a bidirectional ranking loss that pulls a pair together and pushes
    items of other classes apart).
  * Text-specific space: symmetrically, N^T_T (the paper: recurrent attention over word
    sequences) classifies, N^T_I projects images into it.
  * Similarity of image i and text t: w * cos(N^I_I(i), N^I_T(t)) + (1 - w) * cos(N^T_I(i), N^T_T(t)).

Here each network is an MLP on the feature vectors [d -> h -> k] (the seam for the recurrent
attention networks is the per-space branch module), trained in two stages as in the paper:
`pretrain_epochs` epochs of classification for the own-modality networks only, then every
network with
    L = sum_spaces [ CE(C_s(own), y) + CE(C_s(other), y) + rank * R(own, other) ],
    R(a, b) = mean over i and over j of another class of
              max(0, margin - cos(a_i, b_i) + cos(a_i, b_j)) + max(0, margin - cos(a_i, b_i) + cos(a_j, b_i)).
Fusion into one code per item: encode returns [sqrt(w) * a_I / |a_I|, sqrt(1 - w) * a_T / |a_T|]
(a_s = the item's representation in space s), whose cosine with a text's code equals the fused
similarity above exactly, so the benchmark's cosine ranking ranks by MCSM's similarity.
Epoch chosen on validation; w = 0.5 (the paper fuses the two similarities; our fixed weight).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import label_loss, mlp
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod

SPACES = MODALITIES  # the space specific to each modality


def ranking_loss(a: torch.Tensor, b: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Bidirectional hinge ranking of pairs (a_i, b_i) against items of another class (docstring)."""
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    pos = sim.diagonal().unsqueeze(1)
    neg = ((y @ y.t()) == 0).to(a.dtype)  # share no label
    count = neg.sum().clamp_min(1.0)
    cost = F.relu(margin - pos + sim) + F.relu(margin - pos.t() + sim)
    return (cost * neg).sum() / count


class MCSMNet(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int, k: int, num_classes: int, weight: float):
        super().__init__()
        # branch[space][modality]: modality -> the space of `space`
        self.branch = nn.ModuleDict({s: nn.ModuleDict({m: nn.Sequential(mlp([d, hidden]), nn.Linear(hidden, k))
                                                       for m, d in dims.items()}) for s in SPACES})
        self.classifier = nn.ModuleDict({s: nn.Linear(k, num_classes) for s in SPACES})
        self.register_buffer("weight", torch.tensor([math.sqrt(weight), math.sqrt(1.0 - weight)]))

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        parts = [F.normalize(self.branch[s][modality](x), dim=1) * self.weight[i] for i, s in enumerate(SPACES)]
        return torch.cat(parts, 1)


@register_method
class MCSM(TorchMethod):
    name = "mcsm"
    code_type = "real"
    uses_validation = True
    schedule = "epochs"
    info = MethodInfo(
        display_name="MCSM",
        full_name="Modality-specific Cross-modal Similarity Measurement",
        paper="Y. Peng, J. Qi, Y. Yuan, Modality-Specific Cross-Modal Similarity Measurement With Recurrent Attention Network",
        venue="IEEE Transactions on Image Processing 27(11)",
        year=2018,
        code_url=None,
        status="partial",
        supervision="supervised",
        deviations=(
            "Re-implemented from the paper's description; no official code was consulted.",
            "MLPs on the benchmark's feature vectors replace the recurrent attention networks over image regions and word sequences (no region features or word sequences here); the per-space branches are the seam.",
            "The two similarities are fused with a fixed weight w = 0.5, realised as a concatenated code whose cosine equals the fused similarity.",
            "Layer sizes, margin, loss weight, Adam settings and epochs are our choices; the epoch is chosen on the validation split.",
            "Schedule: 30 epochs (5 of pre-training) with 512-unit layers, kept over 60 epochs (10 of pre-training) with 1024-unit layers (no gain beyond the seed noise on wiki's validation split, docs/methods.md); --set epochs=60 --set pretrain_epochs=10 --set hidden=1024 gives the longer one.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "hidden": Param(512, low=1, smoke=16, doc="hidden width"),
        "k": Param(128, low=1, search=("choice", [64, 128, 256]), smoke=8, doc="common-space dimension"),
        "fusion_weight": Param(0.5, low=0.0, high=1.0, search=("float", 0.1, 0.9),
            doc="weight of the image-guided similarity (1 - it: text-guided)"),
        "rank": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="ranking loss weight"),
        "margin": Param(0.2, low=0.0, search=("float", 0.05, 0.5), doc="ranking loss margin"),
        "pretrain_epochs": Param(5, low=0, high=MAX_EPOCHS, smoke=1,
            doc="epochs of per-modality pretraining before the joint stage"),
        "lr": Param(0.0001, low=0.0, search=("logfloat", 1e-05, 0.001), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "epochs": Param(30, low=1, high=MAX_EPOCHS, search=("int", 10, 60), smoke=3, doc="training epochs"),
        "select_on_validation": Param(True, doc="keep the epoch with the best validation score"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return MCSMNet({"image": self.image_dim, "text": self.text_dim}, c["hidden"], c["k"], self.num_classes,
                       c["fusion_weight"])

    def encoder(self, modality: str):
        return lambda x: self.net(x, modality)

    def loss(self, batch: Batch):
        c, net, x, y = self.config, self.net, batch.x, batch.y
        pretrain = self.done < c["pretrain_epochs"]
        zero = y.new_zeros(())
        cls, rank = zero, zero
        for s in SPACES:
            other = "text" if s == "image" else "image"
            own = net.branch[s][s](x[s])
            cls = cls + label_loss(net.classifier[s](own), y, self.multilabel)
            if not pretrain:
                projected = net.branch[s][other](x[other])
                cls = cls + label_loss(net.classifier[s](projected), y, self.multilabel)
                rank = rank + ranking_loss(own, projected, y, c["margin"])
        total = cls + c["rank"] * rank
        return total, {"L": total, "L_cls": cls, "L_rank": rank, "stage": 1.0 if pretrain else 2.0}
