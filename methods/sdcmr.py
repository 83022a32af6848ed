"""SDCMR: Semantics Disentangling for Cross-Modal Retrieval (Wang, Xu, Wei, Xie, Yang, Shen;
IEEE TIP 33, 2024, doi:10.1109/TIP.2024.3374111). No official code is public; this follows
the paper (equation numbers below are the paper's). docs/methods.md has the full account.

Networks (Sec. III-B, IV-A2; every hidden layer followed by ReLU):
  E_v, E_t   semantic-unrelated VAE encoders  [d_m -> 2048 -> 1024] -> (mu, logvar) of z^u in R^k
  E_s        semantic-shared VAE encoder: a first fc layer per modality (Eq. 5), the remaining
             layers shared by both modalities (Eq. 6): [d_m -> 2048 | -> 1024] -> (mu, logvar) of z^s
  D_v, D_t   decoders [2k -> 1024 -> 2048 -> d_m], fed z^u of their own modality concatenated
             with z^s of the OTHER modality (cross-reconstruction, Eq. 9)
  C^s        semantic classifier [k -> k/2 -> l_s];  C^u  modality classifier [k -> k/2 -> 2]

Losses (Eq. 15):  L = L_ELBO + alpha L_rec + beta L_sim + gamma L_ad + eta L_ind
  L_ELBO  the four KL terms of Eqs. 2-4 (prior N(0, I)); see "ambiguities" for the likelihood term
  L_rec   MSE(D_v(z^u_v (+) z^s_t), v) + MSE(D_t(z^u_t (+) z^s_v), t)                      (Eq. 10)
  L_sim   mean_i ||z^s_v,i - z^s_t,i||^2                                                   (Eq. 7)
  L_ad    L_ss + L_su (Eqs. 11-13): on z^s, C^s is a cooperating classifier and C^u an adversary
          behind a gradient reversal layer (GRL); on z^u the roles swap (GRL in front of C^s).
          Both classifiers minimise all four cross-entropies; the encoders minimise the
          cooperating ones and, through the GRLs, maximise the adversarial ones.
  L_ind   ||Z_v^s^T Z_v^u||_F + ||Z_t^s^T Z_t^u||_F over the minibatch                    (Eq. 14)
Training: Algorithm 1, Adam (lr 2e-4), batch 64, 500 iterations; k=32, alpha=1, beta=5,
gamma=10, eta=1 (Sec. IV-A2). Retrieval: cosine similarity of z^s (Sec. III-G); encode()
returns the posterior mean of z^s, not a sample.

Ambiguities and the readings taken (each consistent with the rest of the paper):
  * Eq. 9 writes D_t(z^u_t (+) z^s_t); Sec. III-B says the semantic representations are
    swapped, z_t = {z^u_t, z^s_v}: the text decoder gets z^s_v.
  * Eq. 11 repeats the image term twice and applies C^u to z^u; the text around it says the
    GRL sits before C^u and that E_s maximises the modality cross-entropy, so L_ss is
    sum over m in {v, t} of CE(C^s(z^s_m), y) - CE(C^u(z^s_m), y^u) (second term through the
    GRL). Likewise Eq. 12's C^s(z^s_m) is read as C^s(z^u_m) behind its GRL.
  * The minus signs of Eqs. 11-12 are realised by the GRLs (DANN): the classifiers minimise
    every cross-entropy, the encoders receive the reversed gradient of the adversarial ones.
  * Per-block gradients, Eqs. 16-20 as printed (default, routing="per-block"): E_v, E_t get
    alpha grad L_rec + eta grad L_ind only (no KL of z^u, no L_ad), the decoders alpha grad L_rec,
    C^u and C^s gamma grad L_ad, E_s all five terms. Sec. III-C/III-F suggest E_v, E_t also feel
    the KL of z^u and the L_su game; routing="full" (variant `full-gradient`) gives every block
    the gradient of the whole Eq. 15. Under "full", C^s is trained to classify z^s and, behind
    the GRL, z^u; the z^u encoders fight C^s and, when they win, C^s drifts to a uniform output
    and z^s collapses (measured on wiki, docs/methods.md).
  * Eq. 17 trains the decoders with L_rec alone, so the likelihood term of Eqs. 2-3 is the
    cross-reconstruction of Eq. 10 (counted once, weight alpha); L_ELBO contributes its KL
    terms. `elbo_self_recon=True` adds the literal self-reconstruction D_m(z^u_m (+) z^s_m)
    of Eqs. 2-3 as a separate term instead.
  * Losses use reparameterised samples of z^u, z^s (sim_ind_on="samples"; "means" computes
    L_sim and L_ind on the posterior means, docs/methods.md has the validation comparison);
    the classifiers' hidden layer has k/2
    units followed by ReLU; the encoders' mu/logvar heads and the decoders' last layer are
    linear (a ReLU there would forbid negative means / reconstructions).
  * Algorithm 1 updates the five blocks one after another from the same minibatch; they are
    stepped in that order from one forward/backward pass (re-evaluating Eq. 15 between
    block updates would cost five passes per iteration and is not specified).
  * Scale of L_sim and L_ind. Printed literally, Eq. 7 sums over the k dimensions and Eq. 14
    is a norm of a sum over the N instances of the batch (no 1/N, unlike Eqs. 7, 10-12). At
    those scales the two terms dominate Eq. 15 and drive z^s to a constant: on easy synthetic
    data and on a validation split carved from Wikipedia's training set the codes scored at
    chance, and removing either term *raised* mAP, the opposite of Table III. The reading
    consistent with Table III (and with the MSE of Eq. 10) is per-element: L_sim is the mean
    squared difference over the k dimensions and L_ind is divided by N. `literal_scale=true`
    restores the printed sums.
  * Multi-label data: the semantic cross-entropy becomes a binary cross-entropy with logits.
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
    kl_standard_normal,
    label_loss,
    mlp_decoder,
    modality_targets,
    reparameterize,
    shared_encoder,
    vae_encoder,
)
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod, adam

OTHER = {"image": "text", "text": "image"}


class SDCMRNet(nn.Module):
    def __init__(self, dims: dict[str, int], k: int, hidden: list[int], num_classes: int):
        super().__init__()
        # Parameter blocks in the order of Algorithm 1: theta_u, theta_d, theta_c^u, theta_c^s, theta_s.
        self.enc_u = nn.ModuleDict({m: vae_encoder(d, hidden, k) for m, d in dims.items()})
        self.dec = nn.ModuleDict({m: mlp_decoder(2 * k, hidden, d) for m, d in dims.items()})
        self.cls_u = classifier_head(k, 2)
        self.cls_s = classifier_head(k, num_classes)
        self.enc_s = shared_encoder(dims, hidden, k, gaussian=True)

    def blocks(self) -> list[nn.Module]:
        return [self.enc_u, self.dec, self.cls_u, self.cls_s, self.enc_s]


@register_method
class SDCMR(TorchMethod):
    name = "sdcmr"
    code_type = "real"
    info = MethodInfo(
        display_name="SDCMR",
        full_name="Semantics Disentangling for Cross-Modal Retrieval",
        paper="Z. Wang, X. Xu, J. Wei, N. Xie, Y. Yang, H. T. Shen, Semantics Disentangling for Cross-Modal Retrieval",
        venue="IEEE Transactions on Image Processing 33",
        year=2024,
        code_url=None,
        status="re-implementation",
        supervision="supervised",
        deviations=(
            "No official code exists; built from the paper, with the typo readings listed in the module docstring and docs/methods.md (Eq. 9 text decoder fed z^s_v; Eq. 11 second term on text and on z^s; Eq. 12 C^s applied to z^u).",
            "Per-block gradients as printed in Eqs. 16-20 (E_v, E_t: L_rec and L_ind only; decoders: L_rec; classifiers: L_ad; E_s: all terms); routing=full (variant 'full-gradient') gives every block the gradient of the whole Eq. 15.",
            "The ELBO likelihood term is the cross-reconstruction L_rec (the decoders are trained by L_rec alone, Eq. 17); set elbo_self_recon=true for a separate self-reconstruction term.",
            "Algorithm 1's five block updates use the gradients of one forward/backward pass per iteration instead of re-evaluating the loss between block updates.",
            "L_sim (Eq. 7) is averaged over the k latent dimensions and L_ind (Eq. 14) divided by the batch size, because the printed sums collapse z^s to chance-level codes, contradicting Table III (docs/methods.md); literal_scale=true restores them.",
            "Multi-label datasets use a binary cross-entropy with logits for the semantic classifier.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "k": Param(32, low=1, search=("choice", [16, 32, 64]), smoke=8, doc="dimension of z^s and z^u (Sec. IV-A2)"),
        "hidden": Param([2048, 1024], item=int, low=1, smoke=[32, 16],
            doc="encoder hidden widths; decoders use them reversed (Sec. IV-A2)"),
        "alpha": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="L_rec weight"),
        "beta": Param(5.0, low=0.0, search=("logfloat", 0.5, 50.0), doc="L_sim weight"),
        "gamma": Param(10.0, low=0.0, search=("logfloat", 1.0, 100.0), doc="L_ad weight"),
        "eta": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="L_ind weight"),
        "lr": Param(0.0002, low=0.0, search=("logfloat", 5e-05, 0.001), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "iterations": Param(500, low=1, high=MAX_ITERATIONS, search=("int", 250, 1000), smoke=3,
            doc="training iterations (minibatch steps)"),
        "elbo_self_recon": Param(False,
            doc="add the literal self-reconstruction likelihood of Eqs. 2-3 as a separate term"),
        # True: Eq. 7 summed over the k dimensions and Eq. 14 summed over the batch, exactly as
        # printed; False (default): per-element means, see the module docstring.
        "literal_scale": Param(False, doc="L_sim and L_ind as the printed sums (false: per-element means)"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features, as the paper)"),
        "routing": Param("per-block", choices=("per-block", "full"),
            doc='"per-block": Eqs. 16-20 as printed; "full": every block gets the gradient of Eq. 15'),
        "sim_ind_on": Param("samples", choices=("samples", "means"),
            doc='L_sim and L_ind on reparameterised "samples" or posterior "means"'),
    }
    # Table III: one loss term removed at a time (L_ELBO is never removed, Sec. IV-C1).
    variants = {
        "w/o L_rec": {"alpha": 0.0},
        "w/o L_sim": {"beta": 0.0},
        "w/o L_ad": {"gamma": 0.0},
        "w/o L_ind": {"eta": 0.0},
        # Not an ablation of the paper: every block gets the gradient of the whole Eq. 15.
        "full-gradient": {"routing": "full"},
    }

    def build(self) -> nn.Module:
        c = self.config
        return SDCMRNet({"image": self.image_dim, "text": self.text_dim}, c["k"], c["hidden"], self.num_classes)

    def encoder(self, modality: str) -> nn.Module:
        return Modal(self.net.enc_s, modality, output=0)

    # ------------------------------------------------------------------------------------
    def losses(self, x: dict[str, torch.Tensor], y: torch.Tensor, noise: torch.Generator | None, sample: bool = True,
               parts: dict | None = None, route: bool = False):
        """Eq. 15 on one minibatch. Returns (objective to back-propagate, dict of logged terms);
        `parts`, when given, receives the weighted terms (elbo, rec, sim, ad, ind) for routing.
        `route`: the objective's gradient is Eqs. 16-20's per-block gradient (same values): the
        KL of z^u and the classifiers' terms on z^u are cut from E_v, E_t (no other block
        depends on them), so one backward pass routes every term (needs elbo_self_recon off).

        The objective carries the adversarial cross-entropies with a plus sign; the GRLs make the
        encoders maximise them, which is Eqs. 11-13's min-max. The logged L_ad is Eq. 13 as the
        encoders see it (cooperating terms minus adversarial terms)."""
        c, net = self.config, self.net
        alpha, beta, gamma, eta = (c[key] for key in ("alpha", "beta", "gamma", "eta"))
        z_u, z_s, mu = {}, {}, {}
        kl = kl_cut = x["image"].new_zeros(())
        for m in MODALITIES:
            mu_u, logvar_u = net.enc_u[m](x[m])
            mu_s, logvar_s = net.enc_s(x[m], m)
            kl_u, kl_s = kl_standard_normal(mu_u, logvar_u), kl_standard_normal(mu_s, logvar_s)
            kl = kl + kl_u + kl_s
            kl_cut = kl_cut + (kl_u.detach() if route else kl_u) + kl_s
            mu[m] = (mu_u, mu_s)
            z_u[m] = reparameterize(mu_u, logvar_u, noise) if sample else mu_u
            z_s[m] = reparameterize(mu_s, logvar_s, noise) if sample else mu_s
        zero = x["image"].new_zeros(())
        elbo = kl
        if route and c["elbo_self_recon"]:
            raise ValueError("route=True needs elbo_self_recon off (Eq. 17 keeps the decoders from L_ELBO)")
        if c["routing"] not in ("per-block", "full"):
            raise ValueError(f"routing must be 'per-block' or 'full', got {c['routing']!r}")
        if c["sim_ind_on"] not in ("samples", "means"):
            raise ValueError(f"sim_ind_on must be 'samples' or 'means', got {c['sim_ind_on']!r}")
        # L_sim and L_ind on the samples (default) or on the posterior means
        zs_si = {m: mu[m][1] for m in MODALITIES} if c["sim_ind_on"] == "means" else z_s
        zu_si = {m: mu[m][0] for m in MODALITIES} if c["sim_ind_on"] == "means" else z_u
        if c["elbo_self_recon"]:
            for m in MODALITIES:
                elbo = elbo + F.mse_loss(net.dec[m](torch.cat([z_u[m], z_s[m]], 1)), x[m])
        rec = sim = ad_objective = ad_logged = ind = zero
        log: dict[str, float] = {}
        if alpha:
            rec = sum(F.mse_loss(net.dec[m](torch.cat([z_u[m], z_s[OTHER[m]]], 1)), x[m]) for m in MODALITIES)
        if beta:
            # Eq. 7; as an MSE over the k dimensions unless literal_scale (see the docstring)
            sim = (zs_si["image"] - zs_si["text"]).pow(2).sum(1).mean()
            if not c["literal_scale"]:
                sim = sim / zs_si["image"].shape[1]
        if gamma:
            terms = {"ce_sem_s": zero, "ce_mod_s": zero, "ce_mod_u": zero, "ce_sem_u": zero}
            for m in MODALITIES:
                y_mod = modality_targets(len(y), m, y.device)
                # semantic-shared unit (L_ss): C^s cooperates, C^u behind a GRL
                terms["ce_sem_s"] = terms["ce_sem_s"] + label_loss(net.cls_s(z_s[m]), y, self.multilabel)
                terms["ce_mod_s"] = terms["ce_mod_s"] + F.cross_entropy(net.cls_u(grad_reverse(z_s[m])), y_mod)
                # semantic-unrelated unit (L_su): C^u cooperates, C^s behind a GRL
                zu_c = z_u[m].detach() if route else z_u[m]  # Eq. 16: no L_ad for E_v, E_t
                terms["ce_mod_u"] = terms["ce_mod_u"] + F.cross_entropy(net.cls_u(zu_c), y_mod)
                terms["ce_sem_u"] = terms["ce_sem_u"] + label_loss(net.cls_s(grad_reverse(zu_c)), y, self.multilabel)
            ad_objective = sum(terms.values())
            ad_logged = terms["ce_sem_s"] - terms["ce_mod_s"] + terms["ce_mod_u"] - terms["ce_sem_u"]
            log.update(terms)
        if eta:
            # Eq. 14; divided by N like every other term of Eq. 15 unless literal_scale
            ind = sum(frobenius(zs_si[m].t() @ zu_si[m]) for m in MODALITIES)
            if not c["literal_scale"]:
                ind = ind / len(y)
        objective = (kl_cut if route else elbo) + alpha * rec + beta * sim + gamma * ad_objective + eta * ind
        total = elbo + alpha * rec + beta * sim + gamma * ad_logged + eta * ind
        if parts is not None:
            parts.update(elbo=elbo, rec=alpha * rec, sim=beta * sim, ad=gamma * ad_objective, ind=eta * ind)
        log = {"L": total, "L_ELBO": elbo, "L_rec": rec, "L_sim": sim, "L_ad": ad_logged, "L_ind": ind, **log}
        return objective, log

    def loss(self, batch: Batch):
        return self.losses(batch.x, batch.y, self.noise)

    def step(self, batch: Batch):
        c = self.config
        if c["routing"] == "full" or not c["elbo_self_recon"]:
            objective, log = self.losses(batch.x, batch.y, self.noise, route=c["routing"] == "per-block")
            self.update(objective)
            return log
        # per-block with the self-reconstruction term (Eq. 17 keeps it from the decoders): routes
        p: dict = {}
        objective, log = self.losses(batch.x, batch.y, self.noise, parts=p)
        net = self.net
        params = lambda *blocks: [q for b in blocks for q in b.parameters()]  # noqa: E731
        self.update_routed([
            (p["rec"] + p["ind"], params(net.enc_u, net.dec)),  # Eq. 16 (theta_u), Eq. 17 (theta_d: L_ind does not reach it)
            (p["ad"], params(net.cls_u, net.cls_s)),  # Eqs. 18-19
            (objective, params(net.enc_s)),  # Eq. 20: all five terms
        ], report=objective)
        return log

    def make_optimizers(self):
        # One Adam over the five blocks of Algorithm 1 (per-parameter Adam: the same update as
        # five optimizers stepped in the order of lines 3-7).
        return {"net": adam([{"params": block.parameters()} for block in self.net.blocks()], lr=self.config["lr"])}
