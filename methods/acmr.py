"""ACMR: Adversarial Cross-Modal Retrieval (Wang, Yang, Xu, Hanjalic, Shen; ACM MM 2017).
Official TensorFlow demo: github.com/sunpeng981712364/ACMR_demo.

The paper's method (Sec. 3), as implemented here:
  feature projectors  f_V, f_T: feed-forward networks with tanh (official demo: image
                      d -> 512 -> 100 -> k, text d -> k -> 100 -> k, k = 40) into the common space
  label classifier    a linear softmax layer on the projected features of both modalities
                      (intra-modal discrimination, L_imd = cross-entropy)
  triplet constraints inter-modal invariance L_imi = L_imi,V + L_imi,T: for an image anchor v_i,
                      texts t_j of the same label are positives, texts t_k sharing no label are
                      negatives, and each triplet costs
                        l2(v_i, t_j) + lambda * max(0, mu + l2(v_i, t_j) - l2(v_i, t_k))
                      (l2 = Euclidean distance in the common space); symmetrically for text
                      anchors against images. All triplets of the minibatch, averaged.
  regulariser         L_reg = sum of the Frobenius norms of the projectors' weight matrices
  embedding loss      L_emb = alpha L_imi + beta L_imd + reg * L_reg
  modality classifier D: three fc layers k -> k/2 -> k/4 -> 2 (official demo, linear) predicting
                      image vs text; L_adv = its cross-entropy
  min-max             projectors and label classifier minimise L_emb - L_adv, D minimises L_adv;
                      realised with a gradient reversal layer in front of D whose factor follows
                      DANN's schedule 2 / (1 + exp(-10 p)) - 1 (official demo), p = training progress.
Training: Adam (lr 1e-4, beta1 0.5), batch 64, 200 epochs (official demo for Wikipedia).
Retrieval: cosine similarity of the projected features.

Differences from the official demo, which follow the paper instead: the demo never trains its
label classifier (its variables are in no optimiser's var_list) and applies the modality loss
only to D's variables, so no adversarial gradient reaches the projectors; here the label
classifier is trained with the projectors and the reversed modality gradient reaches them. The
demo's Wikipedia script also replaces the triplets by a pairwise similar/dissimilar loss; the
triplets above are the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import Modal, dann_lambda, frobenius, grad_reverse, label_loss, modality_targets
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import Batch, TorchMethod, label_similarity


def tanh_mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers)


class ACMRNet(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: dict[str, list[int]], k: int, num_classes: int):
        super().__init__()
        self.projector = nn.ModuleDict({m: tanh_mlp([d, *hidden[m], k]) for m, d in dims.items()})
        self.label_classifier = nn.Linear(k, num_classes)
        # official demo: three fully connected layers without activations
        widths = [k, max(k // 2, 1), max(k // 4, 1), 2]
        self.modality_classifier = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])])

    def forward(self, x: torch.Tensor, modality: str):
        return self.projector[modality](x)


def triplet_term(anchor: torch.Tensor, other: torch.Tensor, s: torch.Tensor, margin: float, lam: float) -> torch.Tensor:
    """Mean over the minibatch's triplets (i, j, k), j a positive and k a negative of anchor i in
    the other modality, of l2(a_i, o_j) + lam * max(0, margin + l2(a_i, o_j) - l2(a_i, o_k)).

    Computed in O(n^2 log n) rather than over the n^3 triplets: for a fixed anchor i and bound
    b = margin + d_ij, sum_k max(0, b - d_ik) over the negatives k is c * b - (sum of the c
    smallest negative distances below b), found by sorting each row's negative distances."""
    dist = torch.cdist(anchor, other)  # (n, n) Euclidean distances
    pos, neg = s, 1.0 - s
    n_neg = neg.sum(1, keepdim=True)  # negatives per anchor
    count = (pos * n_neg).sum()
    if count == 0:
        return anchor.new_zeros(())
    pull = (pos * dist * n_neg).sum()
    # each row's negative distances in ascending order, non-negatives pushed past any bound
    big = dist.detach().max() + margin + 1.0
    sorted_neg, _ = torch.sort(torch.where(neg > 0, dist, big), dim=1)
    prefix = torch.cat([sorted_neg.new_zeros(len(dist), 1), torch.cumsum(sorted_neg, dim=1)], dim=1)
    bound = margin + dist  # b_ij
    c = torch.searchsorted(sorted_neg.detach().contiguous(), bound.detach().contiguous())  # negatives with d_ik < b_ij
    hinge = c * bound - torch.gather(prefix, 1, c)
    return (pull + lam * (pos * hinge).sum()) / count


@register_method
class ACMR(TorchMethod):
    name = "acmr"
    code_type = "real"
    schedule = "epochs"
    info = MethodInfo(
        display_name="ACMR",
        full_name="Adversarial Cross-Modal Retrieval",
        paper="B. Wang, Y. Yang, X. Xu, A. Hanjalic, H. T. Shen, Adversarial Cross-Modal Retrieval",
        venue="ACM Multimedia",
        year=2017,
        code_url="https://github.com/sunpeng981712364/ACMR_demo",
        status="faithful",
        supervision="supervised",
        deviations=(
            "The label classifier is trained and the modality classifier's reversed gradient reaches the projectors, as the paper's min-max states; the official TensorFlow demo does neither.",
            "The paper's triplet constraints are used (all in-batch cross-modal triplets), not the official Wikipedia script's pairwise similar/dissimilar loss.",
            "Loss weights alpha (triplets) = 1 and beta (labels) = 100 follow the official demo's 1 : 100 ratio; the hinge weight lambda = 1 is our choice (docs/methods.md).",
            "Multi-label datasets use a binary cross-entropy with logits for the label classifier; positives / negatives are items sharing / not sharing a label.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "k": Param(40, low=1, search=("choice", [20, 40, 80]), smoke=8,
            doc="common space (official demo semantic_emb_dim)"),
        "image_hidden": Param([512, 100], item=int, low=1, smoke=[16], doc="official demo visual_feature_embed"),
        "text_hidden": Param([40, 100], item=int, low=1, smoke=[16], doc="official demo label_embed"),
        "alpha": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="triplet weight"),
        "beta": Param(100.0, low=0.0, search=("logfloat", 1.0, 1000.0),
            doc="label-classification weight (official demo: 100 * label_loss)"),
        "reg": Param(1.0, low=0.0, doc="weight of L_reg (L_emb = alpha L_imi + beta L_imd + L_reg)"),
        "margin": Param(0.1, low=0.0, search=("float", 0.02, 0.5), doc="mu (official demo margin)"),
        "lambda_hinge": Param(1.0, low=0.0, doc="lambda"),
        "adversarial": Param(True, doc="train the modality classifier adversarially (false: no L_adv, an ablation)"),
        "lr": Param(0.0001, low=0.0, search=("logfloat", 1e-05, 0.001), doc="learning rate"),
        "betas": Param([0.5, 0.999], item=float, low=0.0, high=1.0, length=2, doc="Adam betas"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "epochs": Param(200, low=1, high=MAX_EPOCHS, search=("int", 50, 400), smoke=2,
            doc="official demo for Wikipedia"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        hidden = {"image": c["image_hidden"], "text": c["text_hidden"]}
        return ACMRNet({"image": self.image_dim, "text": self.text_dim}, hidden, c["k"], self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net, modality)

    def start_epoch(self):
        self.adv_factor = dann_lambda(self.done / max(self.total, 1))  # DANN schedule over the epochs
        return {}

    def loss(self, batch: Batch):
        c, net, v, t, y = self.config, self.net, batch.x["image"], batch.x["text"], batch.y
        lam_adv = self.adv_factor
        ev, et = net(v, "image"), net(t, "text")
        s = label_similarity(y, y)
        margin, lam = c["margin"], c["lambda_hinge"]
        l_imi = triplet_term(ev, et, s, margin, lam) + triplet_term(et, ev, s, margin, lam)
        l_imd = label_loss(net.label_classifier(ev), y, self.multilabel) + label_loss(net.label_classifier(et), y, self.multilabel)
        l_reg = sum(frobenius(p) for proj in net.projector.values() for name, p in proj.named_parameters() if name.endswith("weight"))
        l_emb = c["alpha"] * l_imi + c["beta"] * l_imd + c["reg"] * l_reg
        row = {"L_imi": l_imi, "L_imd": l_imd, "L_reg": l_reg, "L_emb": l_emb}
        objective = l_emb
        if c["adversarial"]:
            l_adv = sum(
                F.cross_entropy(net.modality_classifier(grad_reverse(e, lam_adv)), modality_targets(len(e), m, e.device))
                for e, m in ((ev, "image"), (et, "text"))
            )
            objective = objective + l_adv
            row.update(L_adv=l_adv, adv_factor=lam_adv)
        return objective, row
