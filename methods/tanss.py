"""TANSS: ternary adversarial networks with self-supervision (Xu, Lu, Song, Yang, Shen, Li;
"Ternary adversarial networks with self-supervision for zero-shot cross-modal retrieval",
IEEE Trans. Cybernetics 50(6), 2020).

RE-IMPLEMENTATION from the paper's description (no official code consulted).

Three parallel branches ("ternary"):
  * a semantic (self-supervised) branch S: class embedding of the item's label -> common space;
    in the paper the class embedding is the label's word vector, which also covers unseen
    classes (zero-shot); here it is the label vector itself (one-hot / multi-hot), with
    `label_input` as the seam for word vectors,
  * an image branch F_I and a text branch F_T: features -> common space.
A shared classifier C on the common space is trained on the semantic branch (self-supervision:
the branch learns a label-predictive space from the labels alone) and the modality branches are
trained to land on the semantic branch's output of their own item and to be classified alike.
Two discriminators D_I, D_T make it adversarial: each tells the semantic branch's output (real)
from its modality branch's output (fake), and the modality branches learn to fool them.

Per minibatch, in the order of the paper's alternating optimisation:
  1) semantic branch + classifier:  CE(C(s), y) + pairwise label-similarity likelihood of s
  2) discriminators:                BCE(D_m(s), real) + BCE(D_m(f_m), fake), m in {I, T}
  3) modality branches:             sum_m [ CE(C(f_m), y) + align * MSE(f_m, s)
                                            + adv * BCE(D_m(f_m), real) ] + pair * MSE(f_I, f_T)
(C is frozen in step 3: it is the semantic branch's classifier.)
Retrieval: f_I / f_T (cosine). Epoch chosen on validation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import bce, discriminator, label_loss, mlp, side_optimizers
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod, label_similarity


def pairwise_nll(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """mean_ij log(1 + exp theta_ij) - S_ij theta_ij with theta_ij = <a_i, a_j> / 2."""
    theta = a @ a.t() / 2.0
    return (F.softplus(theta) - s * theta).mean()


class TANSSNet(nn.Module):
    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int, k: int, disc_hidden: int):
        super().__init__()
        self.semantic = nn.Sequential(mlp([num_classes, hidden]), nn.Linear(hidden, k))
        self.branch = nn.ModuleDict({m: nn.Sequential(mlp([d, hidden]), nn.Linear(hidden, k)) for m, d in dims.items()})
        self.classifier = nn.Linear(k, num_classes)
        self.disc = nn.ModuleDict({m: discriminator(k, disc_hidden) for m in dims})

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.branch[modality](x)


@register_method
class TANSS(TorchMethod):
    name = "tanss"
    code_type = "real"
    uses_validation = True
    schedule = "epochs"
    info = MethodInfo(
        display_name="TANSS",
        full_name="Ternary Adversarial Networks with Self-Supervision",
        paper="X. Xu, H. Lu, J. Song, Y. Yang, H. T. Shen, X. Li, Ternary Adversarial Networks With Self-Supervision for Zero-Shot Cross-Modal Retrieval",
        venue="IEEE Transactions on Cybernetics 50(6)",
        year=2020,
        code_url=None,
        status="partial",
        supervision="supervised",
        deviations=(
            "Re-implemented from the paper's description; no official code was consulted.",
            "The semantic branch takes the label vector instead of the labels' word vectors (`label_input` is the seam), so the zero-shot setting of the paper is not reproduced; standard retrieval only.",
            "The modality branches are MLPs on the benchmark's feature vectors.",
            "Layer sizes, loss weights (align, adv, pair), Adam settings and epochs are our choices; the epoch is chosen on the validation split.",
            "Schedule: 30 epochs with 512-unit layers, kept over 60 epochs with 1024-unit layers (no gain beyond the seed noise on wiki's validation split, docs/methods.md); --set epochs=60 --set hidden=1024 gives the longer one.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "hidden": Param(512, low=1, smoke=16, doc="hidden width"),
        "k": Param(128, low=1, search=("choice", [64, 128, 256]), smoke=8, doc="common-space dimension"),
        "disc_hidden": Param(256, low=1, smoke=8, doc="discriminator hidden width"),
        "align": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="alignment loss weight"),
        "adv": Param(0.1, low=0.0, search=("logfloat", 0.01, 1.0), doc="adversarial loss weight"),
        "pair": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="pairwise (cross-modal) loss weight"),
        "label_input": Param("label-vector", choices=("label-vector",),
            doc="the label branch's input: the label vector"),
        "lr": Param(0.0001, low=0.0, search=("logfloat", 1e-05, 0.001), doc="learning rate"),
        "lr_disc": Param(0.0001, low=0.0, doc="discriminator learning rate"),
        "betas": Param([0.5, 0.999], item=float, low=0.0, high=1.0, length=2, doc="Adam betas"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "epochs": Param(30, low=1, high=MAX_EPOCHS, search=("int", 10, 60), smoke=2, doc="training epochs"),
        "select_on_validation": Param(True, doc="keep the epoch with the best validation score"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return TANSSNet({"image": self.image_dim, "text": self.text_dim}, self.num_classes, c["hidden"], c["k"],
                        c["disc_hidden"])

    def encoder(self, modality: str):
        return lambda x: self.net(x, modality)

    def make_optimizers(self):
        net = self.net
        return side_optimizers(self.config, semantic=(list(net.semantic.parameters()) + list(net.classifier.parameters()), "lr"),
                               disc=(net.disc.parameters(), "lr_disc"), modal=(net.branch.parameters(), "lr"))

    def step(self, batch: Batch):
        c, net, x, y = self.config, self.net, batch.x, batch.y
        # 1) the self-supervised semantic branch
        s = net.semantic(y)
        l_sem = label_loss(net.classifier(s), y, self.multilabel) + pairwise_nll(s, label_similarity(y, y))
        self.update(l_sem, "semantic")
        with torch.no_grad():  # the updated semantic branch is the target of steps 2-3
            s = net.semantic(y)
        f = {m: net(x[m], m) for m in MODALITIES}
        # 2) discriminators: semantic output real, modality output fake
        l_d = sum(bce(net.disc[m](s), True) + bce(net.disc[m](f[m].detach()), False) for m in MODALITIES)
        self.update(l_d, "disc")
        # 3) modality branches (classifier and discriminators fixed: only "modal" is stepped)
        l_cls = sum(label_loss(net.classifier(f[m]), y, self.multilabel) for m in MODALITIES)
        l_align = sum(F.mse_loss(f[m], s) for m in MODALITIES)
        l_adv = sum(bce(net.disc[m](f[m]), True) for m in MODALITIES)
        l_pair = F.mse_loss(f["image"], f["text"])
        l_mod = l_cls + c["align"] * l_align + c["adv"] * l_adv + c["pair"] * l_pair
        self.update(l_mod, "modal")
        return {"L_sem": l_sem, "L_D": l_d, "L_modal": l_mod, "L_cls": l_cls, "L_align": l_align, "L_adv": l_adv, "L_pair": l_pair}
