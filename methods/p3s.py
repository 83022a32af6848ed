"""P3S: Private-Shared Subspaces Separation (Xu, Lin, Gao, Lu, Shen, Li; "Learning cross-modal
common representations by private-shared subspaces separation", IEEE Trans. Cybernetics 52(5),
3261-3275, 2022).

RE-IMPLEMENTATION from the published description only: neither official code nor the full text
was available to us, so this is built from what the abstract and the SDCMR paper (which
compares against P3S and borrows its independence term) state about it:
  * each modality has a private encoder and a shared encoder ("several fully connected layers",
    SDCMR Sec. I); the shared encoders map both modalities into one shared subspace;
  * an orthogonality constraint separates the private and shared representations of each
    modality (SDCMR's L_ind, Eq. 14, "borrowed from the P3S method");
  * each input is reconstructed from the concatenation of its private and shared parts
    (SDCMR Sec. III-E cites P3S for reconstruction by concatenation);
  * the shared representations are made discriminative (label classification) and
    modality-invariant (a cross-modal adversary, SDCMR Sec. III-D), and paired items are pulled
    together;
  * retrieval compares shared representations.

Networks here (sizes are our choice, mirroring SDCMR's encoders so that the two compare at equal
capacity): private P_m [d_m -> 2048 -> 1024 -> k]; shared S: a first layer per modality then
shared [2048 -> 1024 -> k] layers; decoders D_m [2k -> 1024 -> 2048 -> d_m] on [p_m, s_m];
a linear label classifier and a modality discriminator [k -> k/2 -> 2] (behind a gradient
reversal layer) on the shared representations.

Loss: rec * sum_m MSE(D_m([p_m, s_m]), x_m) + cls * sum_m CE(C(s_m), y)
      + adv * sum_m CE(D(GRL(s_m)), modality) + orth * sum_m ||S_m^T P_m||_F / N
      + sim * mean ||s_v - s_t||^2 / k
All weights 1, Adam lr 2e-4, batch 64, 500 iterations, k = 32 (our choices, not tuned on test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_ITERATIONS, Param
from cmr_bench.methods._blocks import (
    Modal,
    classifier_head,
    frobenius,
    grad_reverse,
    label_loss,
    mlp,
    mlp_decoder,
    modality_targets,
    shared_encoder,
)
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod


class P3SNet(nn.Module):
    def __init__(self, dims: dict[str, int], k: int, hidden: list[int], num_classes: int):
        super().__init__()
        self.private = nn.ModuleDict({m: nn.Sequential(mlp([d, *hidden]), nn.Linear(hidden[-1], k)) for m, d in dims.items()})
        self.shared = shared_encoder(dims, hidden, k)
        self.dec = nn.ModuleDict({m: mlp_decoder(2 * k, hidden, d) for m, d in dims.items()})
        self.label_classifier = classifier_head(k, num_classes, hidden=0)
        self.modality_classifier = classifier_head(k, 2)


@register_method
class P3S(TorchMethod):
    name = "p3s"
    code_type = "real"
    info = MethodInfo(
        display_name="P3S",
        full_name="Private-Shared Subspaces Separation",
        paper="X. Xu, K. Lin, L. Gao, H. Lu, H. T. Shen, X. Li, Learning Cross-Modal Common Representations by Private-Shared Subspaces Separation",
        venue="IEEE Transactions on Cybernetics 52(5)",
        year=2022,
        code_url=None,
        status="re-implementation",
        supervision="supervised",
        deviations=(
            "Re-implemented from the published description (abstract, and the SDCMR paper's account of P3S); no official code or full text was consulted, so layer sizes, loss weights and the exact form of each term are our choices (docs/methods.md).",
            "The similarity between paired shared representations is a plain mean squared distance, not P3S's own (unavailable) similarity measure.",
            "Multi-label datasets use a binary cross-entropy with logits for the label classifier.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "k": Param(32, low=1, search=("choice", [16, 32, 64]), smoke=8,
            doc="dimension of the shared and private parts"),
        "hidden": Param([2048, 1024], item=int, low=1, smoke=[32, 16], doc="encoder hidden widths (decoders reversed)"),
        "rec": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="reconstruction loss weight"),
        "cls": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="classification loss weight"),
        "adv": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="adversarial (modality) loss weight"),
        "orth": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="orthogonality loss weight"),
        "sim": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="cross-modal similarity loss weight"),
        "lr": Param(0.0002, low=0.0, search=("logfloat", 5e-05, 0.001), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "iterations": Param(500, low=1, high=MAX_ITERATIONS, search=("int", 250, 1000), smoke=3,
            doc="training iterations (minibatch steps)"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return P3SNet({"image": self.image_dim, "text": self.text_dim}, c["k"], c["hidden"], self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net.shared, modality)

    def loss(self, batch: Batch):
        c, net, x, y = self.config, self.net, batch.x, batch.y
        w = {key: c[key] for key in ("rec", "cls", "adv", "orth", "sim")}
        zero = y.new_zeros(())
        terms = {key: zero for key in w}
        s = {}
        for m in MODALITIES:
            p, s[m] = net.private[m](x[m]), net.shared(x[m], m)
            if w["rec"]:
                terms["rec"] = terms["rec"] + F.mse_loss(net.dec[m](torch.cat([p, s[m]], 1)), x[m])
            if w["cls"]:
                terms["cls"] = terms["cls"] + label_loss(net.label_classifier(s[m]), y, self.multilabel)
            if w["adv"]:
                logits = net.modality_classifier(grad_reverse(s[m]))
                terms["adv"] = terms["adv"] + F.cross_entropy(logits, modality_targets(len(y), m, y.device))
            if w["orth"]:
                terms["orth"] = terms["orth"] + frobenius(s[m].t() @ p) / len(y)
        if w["sim"]:
            terms["sim"] = (s["image"] - s["text"]).pow(2).mean()
        objective = sum(w[key] * terms[key] for key in w)
        return objective, {"L": objective, **{f"L_{key}": value for key, value in terms.items()}}
