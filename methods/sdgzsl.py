"""SDGZSL-style semantics disentangling transferred to cross-modal retrieval, the second
decoupling baseline of SDCMR's Table IV (Chen, Luo, Qiu, Wang, Huang, Li, Zhang, "Semantics
Disentangling for Generalized Zero-Shot Learning", ICCV 2021; code github.com/uqzhichen/SDGZSL).

SDGZSL (for one visual modality) has two parts: a conditional VAE that generates features of
unseen classes from their attributes, and a disentangling auto-encoder that splits a feature
into a semantic-consistent part h_s and a semantic-unrelated part h_n, with
  * a relation module R(h_s, a_c) -> [0, 1] scored against every class's attribute vector a_c
    and trained by MSE towards the one-hot label (weight 15, official --ga);
  * a total-correlation penalty: a discriminator tells [h_s, h_n] from [h_s, shuffled h_n]
    (trained with cross-entropy, weight 3, every third step, official --dis / --dis_step), and
    the encoder lowers the discriminator's log-ratio estimate of TC (weight 1, official --beta,
    warmed up);
  * reconstruction of the feature from [h_s, h_n].
The transfer to cross-modal retrieval (the SDCMR paper gives no details; ours):
  * the feature generator is dropped (cross-modal retrieval has no unseen classes);
  * the disentangling auto-encoder gets SDCMR's encoder shape: a first layer per modality, then
    shared layers [2048 -> 1024 -> 2k] whose output is split into h_s, h_n in R^k; decoders
    D_m [2k -> 1024 -> 2048 -> d_m] reconstruct each modality from its own [h_s, h_n];
  * the relation module R ([k + c -> 2048 -> 1], sigmoid, shared by the modalities) scores h_s
    of both modalities against the class vectors, which are the one-hot label vectors (the only
    class-level semantics a retrieval dataset has); multi-hot targets for multi-label data;
  * one TC discriminator per modality, as the official one: a linear layer 2k -> 2 with sigmoid
    outputs, trained by cross-entropy on those outputs; the encoder lowers the mean difference
    of its two scores on joint samples (bounded, unlike a logit ratio);
  * paired h_s are pulled together with SDCMR's L_sim (Eq. 7, weight 5), the cross-modal link
    SDGZSL lacks;
  * training as SDCMR: Adam lr 2e-4, batch 64, 500 iterations, k = 32; the TC weight ramps
    linearly from 0 to 1 over the first half of training (SDGZSL's warm-up of 0.001 per epoch
    would leave it near zero in 500 iterations);
  * retrieval: cosine similarity of h_s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_ITERATIONS, Param
from cmr_bench.methods._blocks import Modal, mlp, mlp_decoder, shared_encoder
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod, adam


class RelationModule(nn.Module):
    """R(h_s, a_c): relation score in [0, 1] of every item against every class vector."""

    def __init__(self, k: int, class_dim: int, hidden: int):
        super().__init__()
        self.net = mlp([k + class_dim, hidden, 1], final_activation=False)

    def forward(self, h_s: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        n, c = len(h_s), len(classes)
        pairs = torch.cat([h_s.unsqueeze(1).expand(n, c, -1), classes.unsqueeze(0).expand(n, c, -1)], dim=2)
        return torch.sigmoid(self.net(pairs)).squeeze(2)  # (n, c)


class SDGZSLNet(nn.Module):
    def __init__(self, dims: dict[str, int], k: int, hidden: list[int], num_classes: int, relation_hidden: int):
        super().__init__()
        self.k = k
        self.enc = shared_encoder(dims, hidden, 2 * k)
        self.dec = nn.ModuleDict({m: mlp_decoder(2 * k, hidden, d) for m, d in dims.items()})
        self.relation = RelationModule(k, num_classes, relation_hidden)
        self.discriminator = nn.ModuleDict({m: nn.Linear(2 * k, 2) for m in dims})

    def semantic(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.enc(x, modality)[:, : self.k]


def permute_dims(h: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """[h_s, h_n] with h_n shuffled across the batch: a sample of the product of marginals."""
    perm = torch.randperm(len(h), generator=generator).to(h.device)
    return torch.cat([h[:, :k], h[perm, k:]], dim=1)


@register_method
class SDGZSL(TorchMethod):
    name = "sdgzsl"
    code_type = "real"
    info = MethodInfo(
        display_name="SDGZSL",
        full_name="SDGZSL-style semantics disentangling transferred to cross-modal retrieval",
        paper="Z. Chen, Y. Luo, R. Qiu, S. Wang, Z. Huang, J. Li, Z. Zhang, Semantics Disentangling for Generalized Zero-Shot Learning (transfer: SDCMR Table IV)",
        venue="ICCV",
        year=2021,
        code_url="https://github.com/uqzhichen/SDGZSL",
        status="baseline",
        supervision="supervised",
        deviations=(
            "Transferred from zero-shot classification to retrieval (the SDCMR paper gives no details): no unseen-class generator, SDCMR's encoder shape, a relation module scoring h_s against one-hot classes, and SDCMR's L_sim on paired h_s (docs/methods.md).",
            "The TC weight warms up linearly over the first half of training (SDGZSL: 0.001 per epoch, which would leave it near zero in 500 iterations).",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "k": Param(32, low=1, search=("choice", [16, 32, 64]), smoke=8,
            doc="dimension of the semantic and non-semantic parts"),
        "hidden": Param([2048, 1024], item=int, low=1, smoke=[32, 16], doc="encoder hidden widths (decoders reversed)"),
        "relation_hidden": Param(2048, low=1, smoke=16, doc="official RelationNet fc1 width"),
        "relation": Param(15.0, low=0.0, search=("logfloat", 1.5, 150.0), doc="official --ga"),
        "tc": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="official --beta"),
        "dis": Param(3.0, low=0.0, search=("logfloat", 0.3, 30.0), doc="official --dis"),
        "dis_step": Param(2, low=1, doc="official --dis_step: one discriminator step, then dis_step TC steps"),
        "tc_warmup_fraction": Param(0.5, low=0.0, high=1.0,
            doc="share of training over which the total-correlation weight ramps up"),
        "rec": Param(1.0, low=0.0, doc="reconstruction loss weight"),
        'sim': Param(5.0, low=0.0, search=('logfloat', 0.5, 50.0), doc="SDCMR's L_sim weight"),
        "lr": Param(0.0002, low=0.0, search=("logfloat", 5e-05, 0.001), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "iterations": Param(500, low=1, high=MAX_ITERATIONS, search=("int", 250, 1000), smoke=4,
            doc="training iterations (minibatch steps)"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
    }

    def build(self) -> nn.Module:
        c = self.config
        return SDGZSLNet({"image": self.image_dim, "text": self.text_dim}, c["k"], c["hidden"],
                         self.num_classes, c["relation_hidden"])

    def encoder(self, modality: str) -> nn.Module:
        return Modal(_Semantic(self.net), modality)

    def make_optimizers(self):
        lr = self.config["lr"]
        self.shuffle = torch.Generator().manual_seed(int(self.seed) + 2)
        model = [p for name, p in self.net.named_parameters() if not name.startswith("discriminator.")]
        return {"model": adam(model, lr=lr), "dis": adam(self.net.discriminator.parameters(), lr=lr)}

    def step(self, batch: Batch):
        """One iteration: a discriminator step every (dis_step + 1)-th iteration, an encoder step
        on the TC estimate otherwise; the model step follows either (official schedule)."""
        c, net, x, y = self.config, self.net, batch.x, batch.y
        k, dis_step = c["k"], max(c["dis_step"], 0)
        warmup = max(c["tc_warmup_fraction"] * self.total, 1.0)
        classes = torch.eye(self.num_classes, device=self.device)
        h, rec, rel = {}, y.new_zeros(()), y.new_zeros(())
        for m in MODALITIES:
            h[m] = net.enc(x[m], m)
            rec = rec + F.mse_loss(net.dec[m](h[m]), x[m])
            rel = rel + F.mse_loss(net.relation(h[m][:, :k], classes), y)
        sim = (h["image"][:, :k] - h["text"][:, :k]).pow(2).mean()
        objective = c["rec"] * rec + c["relation"] * rel + c["sim"] * sim
        row = {"L_rec": rec, "L_relation": rel, "L_sim": sim}
        if self.done % (dis_step + 1) == 0:
            # discriminator step: joint samples (class 0) vs shuffled h_n (class 1)
            dis_loss = y.new_zeros(())
            for m in MODALITIES:
                joint = torch.sigmoid(net.discriminator[m](h[m].detach()))
                product = torch.sigmoid(net.discriminator[m](permute_dims(h[m].detach(), k, self.shuffle)))
                zeros = torch.zeros(len(y), dtype=torch.long, device=self.device)
                dis_loss = dis_loss + F.cross_entropy(joint, zeros) + F.cross_entropy(product, zeros + 1)
            self.update(c["dis"] * dis_loss, "dis")
            row["L_dis"] = dis_loss
        else:
            # encoder step on the TC estimate: mean difference of the discriminator's (sigmoid)
            # scores for "joint" and "product" (official code; bounded in [-1, 1])
            tc = y.new_zeros(())
            for m in MODALITIES:
                scores = torch.sigmoid(net.discriminator[m](h[m]))
                tc = tc + (scores[:, 0] - scores[:, 1]).mean()
            objective = objective + c["tc"] * min(1.0, (self.done + 1) / warmup) * tc
            row["L_tc"] = tc
        self.update(objective, "model")
        row["L"] = objective
        return row

class _Semantic(nn.Module):
    def __init__(self, net: SDGZSLNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.net.semantic(x, modality)
