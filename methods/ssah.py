"""SSAH: Self-Supervised Adversarial Hashing Networks for Cross-Modal Retrieval
(Li, Deng, Li, Liu, Gao, Tao; CVPR 2018). Official TensorFlow code: github.com/lelan-li/SSAH.

Networks (docs/hashing-methods.md has the equations):
  LabNet  multi-hot label -> 4096 -> 512 (semantic feature F^l) -> hash head H^l (tanh, K bits)
                                                                 -> label head L^l (sigmoid, c)
  ImgNet  image features -> 4096 -> 512 (F^v) -> hash H^v, label L^v   (CNN-F replaced by an MLP)
  TxtNet  bag of words -> multi-scale fusion (average pooling at 5 scales, 1x1 conv, ReLU,
          resize back; 6 channels) -> 4096 -> 512 (F^t) -> hash H^t, label L^t
  D^{v,l}, D^{t,l}  discriminators telling label-network features (1) from image / text ones (0).

Losses (sums, as in the paper): semantic log-likelihood of the pairwise similarity S_ij (share
>= 1 label) on features (alpha) and on hash outputs (gamma), similar and dissimilar pairs
weighing half each by default (pair_norm, see below), the quantisation ||H - sign(H)||^2
(beta), the label prediction ||L_hat - L||^2 (eta) and, for ImgNet / TxtNet, the adversarial term
(delta). One outer iteration trains LabNet, then the discriminators, then ImgNet, then TxtNet,
each in stages whose learning rate drops by 10^-0.5 (the official schedule).

The official code feeds the discriminator outputs that enter the image / text losses from
placeholders filled with numpy arrays, so its adversarial terms send no gradient to ImgNet or
TxtNet. Here the discriminators read the live image / text features, so the modality networks
are trained to make their features indistinguishable from the label network's, as the paper's
min-max objective (eq. 5) states.

Pair balance (pair_norm="balanced", default). With the paper's plain sums (pair_norm="sum") on
single-label data ~90% of the pairs are dissimilar; on non-negative ReLU features
theta = 1/2 f_i^T f_j >= 0, so the cheapest way to lower their loss is to zero features, and
LabNet's 512 semantic units die (~97% on Wikipedia) until whole classes have all-zero features
and share a class code (from 64 bits). Reweighting the pairwise sums so that similar and
dissimilar pairs carry half of the total weight each (the total unchanged, so the terms keep
their scale against the quantisation and label terms) keeps every class code distinct and every
class with live units (60-75% of the units die at the default lr_lab=3e-4, ~90% at 1e-3, where
a class occasionally loses all of them). The training log records LabNet's dead-unit fraction, the label
rows with all-zero features and the minimum Hamming distance between class codes after each
LabNet stage.

Hash likelihood scale (hash_theta_bits=16, default). The paper's theta = 1/2 H_i^T H_j grows with
the code length K, so at 128 bits the likelihood is already satisfied (sigma(theta) ~ 1) when a code
agrees with its class code on ~56% of its bits, and mAP fell with K. theta = 1/2 (16/K) H_i^T H_j,
with the term multiplied by K/16 (same gradient as the paper's near theta = 0), saturates every
length like a 16-bit code (unchanged at 16 bits); docs/hashing-methods.md has the validation
numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import grad_reverse, image_backbone, mlp, unique_rows
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import Averager, TorchMethod, adam, label_similarity, set_lr, sign_pm1


class _Heads(nn.Module):
    """Trunk -> semantic feature (ReLU) -> (tanh hash, sigmoid label) heads."""

    def __init__(self, trunk: nn.Module, trunk_dim: int, semantic_dim: int, bits: int, num_classes: int):
        super().__init__()
        self.trunk = nn.Sequential(trunk, nn.Linear(trunk_dim, semantic_dim), nn.ReLU())
        self.hash = nn.Linear(semantic_dim, bits)
        self.label = nn.Linear(semantic_dim, num_classes)

    def forward(self, x):
        feature = self.trunk(x)
        return torch.tanh(self.hash(feature)), feature, torch.sigmoid(self.label(feature))


class MultiScaleText(nn.Module):
    """SSAH's multi-scale fusion of a bag-of-words vector: for each pooling width w, average-pool
    the vector with window and stride w, scale by a learned 1x1 convolution, ReLU, and resize back
    to the input length (linear interpolation); the input and the 5 resized maps form 6 channels.
    A width larger than the vector degenerates to a global average."""

    def __init__(self, dim: int, widths: tuple[int, ...]):
        super().__init__()
        self.dim = int(dim)
        self.widths = tuple(max(1, min(int(w), self.dim)) for w in widths)
        # One scalar 1x1 convolution per scale (no bias, as the official code); started at 1 so
        # that no branch begins dead behind the ReLU (the official N(0, 0.01^2) start silences
        # about half of them for non-negative inputs).
        self.scale = nn.Parameter(torch.ones(len(self.widths)))
        self.out_dim = self.dim * (1 + len(self.widths))

    def forward(self, x):
        maps = [x]
        x1 = x.unsqueeze(1)
        for i, w in enumerate(self.widths):
            pooled = F.avg_pool1d(x1, kernel_size=w, stride=w)
            pooled = F.relu(pooled * self.scale[i])
            maps.append(F.interpolate(pooled, size=self.dim, mode="linear", align_corners=False).squeeze(1))
        return torch.cat(maps, dim=1)


def pairwise_nll(theta: torch.Tensor, s: torch.Tensor, row_w: torch.Tensor | None = None, col_w: torch.Tensor | None = None,
                 pair_w: torch.Tensor | float | None = None) -> torch.Tensor:
    """-sum_ij r_i c_j w_ij (S_ij theta_ij - log(1 + e^theta_ij)), computed stably with softplus;
    r, c count how many items a distinct row / column stands for (all ones: the plain sum), w
    is an optional per-pair normalisation."""
    terms = F.softplus(theta) - s * theta
    if pair_w is not None:
        terms = terms * pair_w
    if row_w is not None:
        terms = terms * row_w[:, None]
    if col_w is not None:
        terms = terms * col_w[None, :]
    return terms.sum()


@register_method
class SSAH(TorchMethod):
    name = "ssah"
    code_type = "binary"
    schedule = "epochs"
    info = MethodInfo(
        display_name="SSAH",
        full_name="Self-Supervised Adversarial Hashing",
        paper="C. Li, C. Deng, N. Li, W. Liu, X. Gao, D. Tao. Self-Supervised Adversarial Hashing "
        "Networks for Cross-Modal Retrieval.",
        venue="CVPR",
        year=2018,
        code_url="https://github.com/lelan-li/SSAH",
        status="modified",
        supervision="supervised",
        deviations=(
            "Image input is a precomputed feature vector: the fine-tuned CNN-F on raw pixels is replaced "
            "by an MLP (features -> img_hidden -> 512), with an `image_backbone` seam that accepts "
            "only 'features' for now.",
            "The adversarial terms reach ImgNet and TxtNet (the discriminators read the live modality "
            "features); the official TensorFlow code feeds them from placeholders, so they carry no "
            "gradient there.",
            "The pairwise terms are the paper's negative log-likelihood; the official code squares "
            "(S*theta - log(1+e^theta)) instead.",
            "Discriminators are 512 -> 512 -> 256 -> 1 with a sigmoid cross-entropy loss, as in the "
            "official code (the paper describes 4096 -> 4096 -> 1 layers and a squared error).",
            "Far fewer training passes than the official 500 outer iterations x (15 LabNet + 2 "
            "discriminator + 27 ImgNet + 27 TxtNet passes): defaults fit a CPU budget (about 30 s on "
            "Wikipedia); the official per-stage learning-rate decay (x 10^-0.5) is kept.",
            "Learning rates LabNet 3e-4 and ImgNet / TxtNet 3e-3 (official 1e-2, 10^-4.5, 10^-3.5) were chosen on a held-out part of Wikipedia's training split, the networks starting from random weights (docs/hashing-methods.md).",
            "The image MLP standing in for CNN-F is 1024 wide (CPU budget); LabNet and TxtNet keep "
            "the paper's 4096-wide layer.",
            "The multi-scale text block clips pooling widths longer than the text vector to its "
            "length (a global average), and its 1x1-convolution scalars start at 1 instead of "
            "N(0, 0.01^2).",
            "Similar and dissimilar pairs carry half of each pairwise term's weight each (pair_norm=balanced), as the paper's plain sums (variant 'plain sums') kill most of LabNet's units on single-label Wikipedia, and similar pairs have S = 1 (official 0.999).",
            "The hash likelihood's theta is 1/2 (16/K) H_i^T H_j with the term multiplied by K/16 (hash_theta_bits=16), as the paper's form (variant 'paper theta') saturates long codes and lowered validation mAP from 64 bits (docs/hashing-methods.md).",
            "No early stop of a stage on a rising training loss, and the stored label-network "
            "outputs are refreshed once per pass (the official code overwrites each batch's rows).",
            "Input z-scoring stands in for the official mean-pixel subtraction; the LRN layers of the "
            "official code are left out, and "
            "layers keep torch's default initialisation (the official N(0, 0.01^2) start kills the "
            "label network's features on single-label data).",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "image_backbone": Param("features", choices=("features",),
            doc="seam for a raw-pixel CNN; only precomputed features now"),
        "standardize": Param(True, doc="z-score inputs with training statistics"),
        "semantic_dim": Param(512, low=1, smoke=16, doc="SEMANTIC_EMBED (paper / official code)"),
        "lab_hidden": Param(4096, low=1, smoke=32, doc="LabNet: label -> 4096 -> 512"),
        'img_hidden': Param(1024, low=1, smoke=32,
            doc="stands in for CNN-F's fc6/fc7 (4096 there; 1024 for the CPU budget)"),
        "txt_hidden": Param(4096, low=1, smoke=32, doc="TxtNet: MS -> 4096 -> 512"),
        "dis_hidden": Param(512, low=1, smoke=16,
            doc="discriminator: 512 -> dis_hidden -> dis_hidden/2 -> 1 (official code)"),
        "ms_widths": Param((50, 30, 15, 10, 5), item=int, low=1,
            doc="multi-scale pooling widths (5 x level, levels 10,6,3,2,1)"),
        # Normalisation of the sums: "sum" (paper, official code), "mean" (pair terms averaged
        # over pairs, item terms over items) or "balanced" (similar and dissimilar pairs weigh
        # half each; item terms averaged)
        "pair_norm": Param("balanced", choices=("sum", "mean", "balanced"),
            doc="normalisation of the loss sums: sum (paper), mean or balanced"),
        # Hash likelihood (K / hash_theta_bits) J(theta), theta = 1/2 (hash_theta_bits / K) H_i^T H_j:
        # every code length saturates like a hash_theta_bits-bit code, with the paper's gradient
        # at theta ~ 0 (0: the paper's 1/2 H^T H at every length, which saturates long codes
        # before their bits agree with the class code)
        "hash_theta_bits": Param(16, low=0,
            doc="code length whose likelihood scale every length uses (0: the paper's 1/2 H^T H)"),
        "alpha": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="pairwise likelihood on semantic features"),
        "gamma": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="pairwise likelihood on hash outputs"),
        "beta": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="quantisation"),
        "eta": Param(1.0, low=0.0, search=("logfloat", 0.1, 10.0), doc="label prediction"),
        "delta": Param(1.0, low=0.0, doc="adversarial (ImgNet / TxtNet)"),
        "adv_generator_loss": Param("fool", choices=("fool", "minimax"),
            doc="'fool' (BCE to the label-network class) | 'minimax' (reversed D loss)"),
        "epochs": Param(3, low=1, high=MAX_EPOCHS, search=("int", 2, 6), smoke=1,
            doc="outer iterations (official: 500, but its learning rate decays ~10x per 2)"),
        "lab_passes": Param(8, low=0, high=MAX_EPOCHS, smoke=2,
            doc="official k_lab_net = 10 (stages of k, k/2 passes)"),
        "img_passes": Param(10, low=0, high=MAX_EPOCHS, smoke=2,
            doc="official k_img_net = 15 (stages of k, k/2, k/3 passes)"),
        "txt_passes": Param(3, low=0, high=MAX_EPOCHS, smoke=2, doc="official k_txt_net = 15"),
        "dis_passes": Param(1, low=0, high=MAX_EPOCHS, doc="official k_dis_net = 1 (two stages)"),
        "batch_size": Param(128, low=1, smoke=32, doc="minibatch size"),
        "lr_lab": Param(0.0003, low=0.0, doc="official 1e-2 (see deviations)"),
        "lr_img": Param(0.003, low=0.0, search=("logfloat", 0.0001, 0.01),
            doc="official 10^-4.5 (fine-tuning a pretrained CNN-F)"),
        "lr_txt": Param(0.003, low=0.0, search=("logfloat", 0.0001, 0.01), doc="official 10^-3.5"),
        "lr_dis": Param(0.001, low=0.0, doc="official 10^-3"),
        "lr_decay": Param(0.31622776601683794, low=0.0, high=1.0,
            doc="per outer iteration and per stage, as the official schedule"),
    }
    variants = {
        # The official code's behaviour: discriminators train, but no adversarial gradient
        # reaches ImgNet / TxtNet.
        "no adversarial gradient": {"delta": 0.0},
        # The paper's min-max written literally (gradient reversal of the discriminator loss).
        "minimax adversarial": {"adv_generator_loss": "minimax"},
        # The paper's and official code's unweighted pairwise sums (LabNet units die, see above).
        "plain sums": {"pair_norm": "sum"},
        # The paper's hash likelihood theta = 1/2 H^T H at every code length (mAP falls from 64 bits).
        "paper theta": {"hash_theta_bits": 0},
        # The paper's loss as published: plain pairwise sums and theta = 1/2 H^T H (both changes
        # of the default undone); its own row in the hashing tables, the "as published" number.
        "paper loss": {"pair_norm": "sum", "hash_theta_bits": 0},
    }
    row_variants = ("paper loss",)

    # --- networks --------------------------------------------------------------------------
    def build(self):
        c = self.config
        sem, k, ncls = c["semantic_dim"], self.bits, self.num_classes
        backbone, img_dim = image_backbone(c["image_backbone"], self.image_dim)
        widths = c["ms_widths"]
        if isinstance(widths, str):  # e.g. --set ms_widths=50,30,15,10,5
            widths = [int(w) for w in widths.replace("(", "").replace(")", "").split(",") if w.strip()]
        ms = MultiScaleText(self.text_dim, tuple(int(w) for w in widths))
        dh = c["dis_hidden"]
        return {
            "lab": _Heads(mlp([ncls, c["lab_hidden"]]), c["lab_hidden"], sem, k, ncls),
            "img": _Heads(nn.Sequential(backbone, mlp([img_dim, c["img_hidden"]])), c["img_hidden"], sem, k, ncls),
            "txt": _Heads(nn.Sequential(ms, mlp([ms.out_dim, c["txt_hidden"]])), c["txt_hidden"], sem, k, ncls),
            "dis_img": mlp([sem, dh, max(1, dh // 2), 1], final_activation=False),
            "dis_txt": mlp([sem, dh, max(1, dh // 2), 1], final_activation=False),
        }

    def encoder(self, modality):
        net = self.net["img" if modality == "image" else "txt"]
        return lambda x: net(x)[0]

    # --- losses -------------------------------------------------------------------------------
    def _semantic_losses(self, out, y_batch, stored_f, stored_h, s, row_w, col_w=None):
        """alpha J1 + gamma J2 + beta J3 + eta J4 for one network's batch outputs `out`
        against the stored label-network features / hashes of all (distinct) training labels.
        row_w counts the training items behind each stored row; col_w (optional) the batch items
        behind each output row (LabNet runs once per distinct label row of a batch)."""
        c = self.config
        h, f, lab = out
        cw = torch.ones(len(h), device=h.device, dtype=h.dtype) if col_w is None else col_w
        norm = c["pair_norm"]
        pw = None  # per-pair weights beyond the counts
        if norm == "balanced":
            # similar and dissimilar pairs each carry half of the pairwise term's total weight
            # (the total is unchanged, so its scale against the item terms is the paper's)
            n_pairs = row_w[:, None] * cw[None, :]
            n_sim = (n_pairs * s).sum().clamp_min(1.0)
            n_dis = (n_pairs * (1 - s)).sum().clamp_min(1.0)
            pw = (s / (2 * n_sim) + (1 - s) / (2 * n_dis)) * n_pairs.sum()
        elif norm == "mean":
            pw = 1.0 / (row_w.sum() * cw.sum())
        elif norm != "sum":
            raise ValueError(f"pair_norm must be 'sum', 'mean' or 'balanced', got {norm!r}")
        j1 = pairwise_nll(0.5 * stored_f @ f.t(), s, row_w, cw, pw)
        ref = c["hash_theta_bits"]
        if ref < 0:
            raise ValueError(f"hash_theta_bits must be >= 0 (0: the paper's theta), got {ref}")
        scale = ref / h.shape[1] if ref else 1.0
        # divided by the scale: the gradient at theta ~ 0 stays the paper's, so the term keeps its
        # weight against the quantisation at every length (only its saturation point moves)
        j2 = pairwise_nll(0.5 * scale * stored_h @ h.t(), s, row_w, cw, pw) / scale
        j3 = (((sign_pm1(h) - h) ** 2).sum(1) * cw).sum()
        j4 = (((lab - y_batch) ** 2).sum(1) * cw).sum()
        if norm == "mean":  # per-item means for the item terms
            j3, j4 = j3 / cw.sum(), j4 / cw.sum()
        total = c["alpha"] * j1 + c["gamma"] * j2 + c["beta"] * j3 + c["eta"] * j4
        return total, {"pair_feat": j1, "pair_hash": j2, "quant": j3, "label": j4}

    def adversarial_generator_loss(self, modality: str, feature: torch.Tensor) -> torch.Tensor:
        """The adversarial term of ImgNet / TxtNet, computed on the live features (gradient flows
        into the modality network). 'fool': sum BCE(D(F), label-network class); 'minimax': minus the
        discriminator's own loss on these features, through a gradient-reversal layer."""
        dis = self.net["dis_img" if modality == "image" else "dis_txt"]
        mode = self.config["adv_generator_loss"]
        if mode == "fool":
            logits = dis(feature).squeeze(1)
            return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="sum")
        if mode == "minimax":
            logits = dis(grad_reverse(feature, 1.0)).squeeze(1)
            return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="sum")
        raise ValueError(f"adv_generator_loss must be 'fool' or 'minimax', got {mode!r}")

    def discriminator_loss(self, f_lab, f_img, f_txt) -> torch.Tensor:
        """Mean BCE: label-network features are class 1, image / text features class 0."""
        total = 0.0
        for dis, f_mod in ((self.net["dis_img"], f_img), (self.net["dis_txt"], f_txt)):
            real, fake = dis(f_lab).squeeze(1), dis(f_mod).squeeze(1)
            total = total + F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            total = total + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return total / 4.0

    # --- training -----------------------------------------------------------------------------
    def make_optimizers(self):
        c, nets = self.config, self.net
        opts = {key: adam(nets[key].parameters(), c[f"lr_{key}"]) for key in ("lab", "img", "txt")}
        opts["dis"] = adam(list(nets["dis_img"].parameters()) + list(nets["dis_txt"].parameters()), c["lr_dis"])
        # Distinct label rows: every label-network output depends on the label row only, so a sum
        # over all n training items equals a count-weighted sum over the distinct rows.
        y = self.inputs.y
        self.y_uniq, self.inverse, self.counts = unique_rows(y)
        self.s_all = label_similarity(self.y_uniq, y)  # (distinct, n)
        return opts

    def stored_label_outputs(self):
        with torch.no_grad():
            h, f, _ = self.net["lab"](self.y_uniq)
        return f, h

    def label_network_health(self) -> dict:
        """LabNet's dead-unit fraction (semantic units zero for every distinct label row), the
        number of distinct label rows with all-zero features, and the minimum Hamming distance
        between the class codes sign(H^l) of distinct label rows (0: two classes share a code),
        with the number of distinct codes."""
        f, h = self.stored_label_outputs()
        codes = sign_pm1(h)
        dead = (f <= 0).all(0).float().mean()
        # label rows whose semantic features are all zero: their code is tanh(bias), shared
        zero_rows = (f <= 0).all(1).float().sum()
        if len(codes) < 2:
            return {"lab_dead_frac": dead, "lab_zero_rows": zero_rows}
        dist = (codes.shape[1] - codes @ codes.t()) / 2
        dist = dist + torch.eye(len(codes), device=dist.device, dtype=dist.dtype) * codes.shape[1]
        distinct = torch.unique(codes, dim=0).shape[0]
        return {"lab_dead_frac": dead, "lab_zero_rows": zero_rows, "min_class_hamming": dist.min(),
                "class_codes_distinct": torch.tensor(float(distinct))}

    def train_epoch(self):
        """One outer iteration of the official schedule: LabNet, the discriminators, ImgNet, TxtNet,
        each in stages whose learning rate drops by lr_decay."""
        c, nets, epoch, decay = self.config, self.net, self.done, self.config["lr_decay"]
        x, y, y_uniq, inverse, counts = self.inputs.x, self.inputs.y, self.y_uniq, self.inverse, self.counts
        rec: dict = {}

        # 1) LabNet (self-supervised semantic network): two stages of k, k/2 passes.
        mean = Averager()
        for stage in range(2):
            set_lr(self.optimizers["lab"], c["lr_lab"] * decay ** (epoch + stage))
            for _ in range(c["lab_passes"] // (stage + 1)):
                stored_f, stored_h = self.stored_label_outputs()
                for idx in self.epoch_batches():
                    # The label network sees each distinct label row of the batch once,
                    # weighted by how often it occurs: the same sums, far less work.
                    rows, cnt = torch.unique(inverse[idx.to(self.device)], return_counts=True)
                    out = nets["lab"](y_uniq[rows])
                    s_rows = label_similarity(y_uniq, y_uniq[rows])
                    loss, parts = self._semantic_losses(out, y_uniq[rows], stored_f, stored_h, s_rows, counts, cnt.to(y.dtype))
                    self.update(loss, "lab")
                    mean.add(parts)
        rec.update(mean.result("lab_"))
        rec.update(self.label_network_health())
        stored_f, stored_h = self.stored_label_outputs()

        # 2) Discriminators: two stages of k_dis passes.
        mean = Averager()
        for stage in range(2):
            set_lr(self.optimizers["dis"], c["lr_dis"] * decay ** (epoch + stage))
            for _ in range(c["dis_passes"]):
                for idx in self.epoch_batches():
                    idx = idx.to(self.device)
                    with torch.no_grad():
                        f_img = nets["img"](x["image"][idx])[1]
                        f_txt = nets["txt"](x["text"][idx])[1]
                        f_lab = stored_f[inverse[idx]]
                    loss = self.discriminator_loss(f_lab, f_img, f_txt)
                    self.update(loss, "dis")
                    mean.add({"dis_loss": loss})
        rec.update(mean.result() if mean.count else {})

        # 3) ImgNet, then 4) TxtNet: three stages of k, k/2, k/3 passes each.
        for key, modality, passes in (("img", "image", "img_passes"), ("txt", "text", "txt_passes")):
            mean = Averager()
            for stage in range(3):
                set_lr(self.optimizers[key], c[f"lr_{key}"] * decay ** (epoch + stage))
                for _ in range(c[passes] // (stage + 1)):
                    for idx in self.epoch_batches():
                        idx = idx.to(self.device)
                        out = nets[key](x[modality][idx])
                        loss, parts = self._semantic_losses(out, y[idx], stored_f, stored_h, self.s_all[:, idx], counts)
                        if c["delta"]:
                            adv = self.adversarial_generator_loss(modality, out[1])
                            loss = loss + c["delta"] * adv
                            parts["adv"] = adv
                        self.update(loss, key)
                        mean.add(parts)
            rec.update(mean.result(f"{key}_"))
        return rec
