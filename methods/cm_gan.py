"""CM-GAN: cross-modal generative adversarial networks (Peng & Qi; "CM-GANs: Cross-modal
generative adversarial networks for common representation learning", ACM TOMM 15(1), 2019).

RE-IMPLEMENTATION from the paper's description (the official Torch7/Lua release was not read;
only its redistributed training script, for the schedule: 2,000 epochs).

Generative model: one cross-modal autoencoder per modality. Each encoder maps its modality to
the common representation; the LAST encoder layer is shared by the two modalities (the
weight-sharing constraint that correlates the two common representations), and the FIRST
decoder layer is shared as well; the remaining layers are modality-specific.
    encoder_m = shared_top( fc_m(x_m) ),   decoder_m = fc'_m( shared_bottom(c_m) )
A softmax classifier on the common representations adds the semantic (label) constraint.

Discriminative model:
  * intra-modality discriminators D_I, D_T: original feature (real) vs its reconstruction (fake),
  * an inter-modality discriminator D_C on common representations: the image-pathway
    representation is "real", the text-pathway representation "fake" (the paper's
    two-pathway reading: the text pathway learns to produce image-like common representations,
    the image pathway is pulled towards the text one by the pair term below).

Training alternates (the paper's minimax): a discriminator step on D_I, D_T, D_C with the
generators fixed (binary cross-entropy), then a generator step minimising
    rec * sum_m MSE(x^_m, x_m) + cls * sum_m CE(C(c_m), y) + pair * MSE(c_I, c_T)
    + adv * [ BCE(D_I(x^_I), real) + BCE(D_T(x^_T), real) + BCE(D_C(c_T), real) ].
Retrieval: the common representations c_I / c_T (cosine). Epoch chosen on validation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import bce, discriminator, label_loss, side_optimizers
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod


class CMGANNet(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int, k: int, num_classes: int, disc_hidden: int):
        super().__init__()
        self.enc_first = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for m, d in dims.items()})
        self.enc_shared = nn.Linear(hidden, k)  # shared by both pathways: the common representation
        self.dec_shared = nn.Sequential(nn.Linear(k, hidden), nn.ReLU())  # shared first decoder layer
        self.dec_last = nn.ModuleDict({m: nn.Linear(hidden, d) for m, d in dims.items()})
        self.classifier = nn.Linear(k, num_classes)
        self.d_intra = nn.ModuleDict({m: discriminator(d, disc_hidden) for m, d in dims.items()})
        self.d_inter = discriminator(k, disc_hidden)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.enc_shared(self.enc_first[modality](x))

    def decode(self, c: torch.Tensor, modality: str) -> torch.Tensor:
        return self.dec_last[modality](self.dec_shared(c))

    def generator_parameters(self):
        for part in (self.enc_first, self.enc_shared, self.dec_shared, self.dec_last, self.classifier):
            yield from part.parameters()

    def discriminator_parameters(self):
        yield from self.d_intra.parameters()
        yield from self.d_inter.parameters()


@register_method
class CMGAN(TorchMethod):
    name = "cm-gan"
    code_type = "real"
    uses_validation = True
    schedule = "epochs"
    info = MethodInfo(
        display_name="CM-GAN",
        full_name="Cross-modal Generative Adversarial Networks",
        paper="Y. Peng, J. Qi, CM-GANs: Cross-modal Generative Adversarial Networks for Common Representation Learning",
        venue="ACM Transactions on Multimedia Computing, Communications, and Applications 15(1)",
        year=2019,
        code_url=None,
        status="partial",
        supervision="supervised",
        deviations=(
            "Re-implemented from the paper's description; the official Torch7 code was not read (only its redistributed training script, for the schedule).",
            "Fully connected encoders/decoders on the benchmark's feature vectors replace the paper's convolutional image pathway and its text pathway on raw inputs.",
            "The inter-modality discriminator treats image-pathway common representations as real and text-pathway ones as fake, and a paired squared distance term is added; our reading of the paper's two-pathway game.",
            "Layer sizes, loss weights, Adam settings and epochs are our choices; the epoch is chosen on the validation split.",
            "Schedule: 30 epochs with 512-unit layers, kept over 60 epochs with 1024-unit layers (no gain beyond the seed noise on wiki's validation split, docs/methods.md); --set epochs=60 --set hidden=1024 gives the longer one.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "hidden": Param(512, low=1, smoke=16, doc="generator hidden width"),
        "k": Param(128, low=1, search=("choice", [64, 128, 256]), smoke=8, doc="common-space dimension"),
        "disc_hidden": Param(256, low=1, smoke=8, doc="discriminator hidden width"),
        "rec": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="reconstruction loss weight"),
        "cls": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="classification loss weight"),
        "pair": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="pairwise (cross-modal) loss weight"),
        "adv": Param(0.1, low=0.0, search=("logfloat", 0.01, 1.0), doc="adversarial loss weight"),
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
        return CMGANNet({"image": self.image_dim, "text": self.text_dim}, c["hidden"], c["k"],
                        self.num_classes, c["disc_hidden"])

    def encoder(self, modality: str):
        return lambda x: self.net(x, modality)

    def make_optimizers(self):
        return side_optimizers(self.config, gen=(self.net.generator_parameters(), "lr"),
                               disc=(self.net.discriminator_parameters(), "lr_disc"))

    def step(self, batch: Batch):
        c, net, x, y = self.config, self.net, batch.x, batch.y
        code = {m: net(x[m], m) for m in MODALITIES}
        recon = {m: net.decode(code[m], m) for m in MODALITIES}
        # 1) discriminators, generators fixed
        d_loss = sum(bce(net.d_intra[m](x[m]), True) + bce(net.d_intra[m](recon[m].detach()), False) for m in MODALITIES)
        d_loss = d_loss + bce(net.d_inter(code["image"].detach()), True) + bce(net.d_inter(code["text"].detach()), False)
        self.update(d_loss, "disc")
        # 2) generators (encoders, decoders, classifier) against the updated discriminators
        rec = sum(F.mse_loss(recon[m], x[m]) for m in MODALITIES)
        cls = sum(label_loss(net.classifier(code[m]), y, self.multilabel) for m in MODALITIES)
        pair = F.mse_loss(code["image"], code["text"])
        adv = sum(bce(net.d_intra[m](recon[m]), True) for m in MODALITIES) + bce(net.d_inter(code["text"]), True)
        g_loss = c["rec"] * rec + c["cls"] * cls + c["pair"] * pair + c["adv"] * adv
        self.update(g_loss, "gen")
        return {"L_D": d_loss, "L_G": g_loss, "L_rec": rec, "L_cls": cls, "L_pair": pair, "L_adv": adv}
