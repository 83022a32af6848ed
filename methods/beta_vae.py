"""beta-VAE (beta = 5) transferred to cross-modal retrieval, the first decoupling baseline of
SDCMR's Table IV (Higgins et al., "beta-VAE: Learning basic visual concepts with a constrained
variational framework", ICLR 2017).

beta-VAE disentangles by weighting the KL term of a VAE's ELBO by beta > 1; it has one latent
per item and no notion of modalities or labels. The SDCMR paper says it "transfers" it to
cross-modal retrieval without details. The transfer here keeps everything of SDCMR that is
not about disentangling and replaces SDCMR's disentangling with beta-VAE's:
  * encoder: SDCMR's semantic encoder E_s (a first layer per modality, shared layers after it,
    [d_m -> 2048 | -> 1024] -> (mu, logvar) of z in R^k), now the only latent (no z^u split);
  * decoders D_m [k -> 1024 -> 2048 -> d_m] reconstruct each modality from its own z;
  * loss: sum_m [MSE(D_m(z_m), x_m) + beta KL(q(z_m | x_m) || N(0, I))]      (beta-VAE, beta = 5)
          + sim * mean ||z_v - z_t||^2 / k                                    (SDCMR Eq. 7)
          + cls * sum_m CE(C(z_m), y)     (the cooperating half of SDCMR's L_ss, C = [k -> k/2 -> c])
    with SDCMR's weights sim = 5 and cls = 10; no adversaries and no independence term;
  * training as SDCMR: Adam lr 2e-4, batch 64, 500 iterations, k = 32;
  * retrieval: cosine similarity of the posterior means of z.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_ITERATIONS, Param
from cmr_bench.methods._blocks import (
    Modal,
    classifier_head,
    kl_standard_normal,
    label_loss,
    mlp_decoder,
    reparameterize,
    shared_encoder,
)
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod


class BetaVAENet(nn.Module):
    def __init__(self, dims: dict[str, int], k: int, hidden: list[int], num_classes: int):
        super().__init__()
        self.enc = shared_encoder(dims, hidden, k, gaussian=True)
        self.dec = nn.ModuleDict({m: mlp_decoder(k, hidden, d) for m, d in dims.items()})
        self.cls = classifier_head(k, num_classes)


@register_method
class BetaVAE(TorchMethod):
    name = "beta-vae"
    code_type = "real"
    info = MethodInfo(
        display_name="β-VAE",
        full_name="beta-VAE (beta = 5) transferred to cross-modal retrieval",
        paper="I. Higgins et al., beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework (transfer: SDCMR Table IV)",
        venue="ICLR",
        year=2017,
        code_url=None,
        status="baseline",
        supervision="supervised",
        deviations=(
            "beta-VAE (single-modality, unsupervised) is embedded in SDCMR's framework for cross-modal retrieval: SDCMR's shared encoder as its encoder, SDCMR's L_sim and C^s as the cross-modal and label signals (docs/methods.md).",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "k": Param(32, low=1, search=("choice", [16, 32, 64]), smoke=8, doc="latent dimension"),
        "hidden": Param([2048, 1024], item=int, low=1, smoke=[32, 16], doc="encoder hidden widths (decoders reversed)"),
        "beta": Param(5.0, low=0.0, search=("logfloat", 0.5, 20.0), doc="KL weight (SDCMR Table IV: beta = 5)"),
        'sim': Param(5.0, low=0.0, search=('logfloat', 0.5, 20.0), doc="SDCMR's beta (L_sim weight)"),
        'cls': Param(10.0, low=0.0, search=('logfloat', 1.0, 50.0), doc="SDCMR's gamma (classifier weight)"),
        "lr": Param(0.0002, low=0.0, search=("logfloat", 5e-05, 0.001), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "iterations": Param(500, low=1, high=MAX_ITERATIONS, search=("int", 250, 1000), smoke=3,
            doc="training iterations (minibatch steps)"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return BetaVAENet({"image": self.image_dim, "text": self.text_dim}, c["k"], c["hidden"], self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net.enc, modality, output=0)

    def loss(self, batch: Batch):
        c, net, x, y, noise = self.config, self.net, batch.x, batch.y, self.noise
        rec = kl = cls = y.new_zeros(())
        z = {}
        for m in MODALITIES:
            mu, logvar = net.enc(x[m], m)
            z[m] = reparameterize(mu, logvar, noise)
            rec = rec + F.mse_loss(net.dec[m](z[m]), x[m])
            kl = kl + kl_standard_normal(mu, logvar)
            cls = cls + label_loss(net.cls(z[m]), y, self.multilabel)
        sim = (z["image"] - z["text"]).pow(2).mean()
        objective = rec + c["beta"] * kl + c["sim"] * sim + c["cls"] * cls
        return objective, {"L": objective, "L_rec": rec, "KL": kl, "L_sim": sim, "L_cls": cls}
