"""DJSRH: Deep Joint-Semantics Reconstructing Hashing for Large-Scale Unsupervised Cross-Modal
Retrieval (Su, Zhong, Zhang; ICCV 2019). Official PyTorch code: github.com/zzs1994/DJSRH.

Unsupervised: `fit` never reads `train.labels`.

Per mini-batch of m pairs (docs/hashing-methods.md has the equations):
  S_I = cos(F_I, F_I) and S_T = cos(F_T, F_T) from the original features (rescaled to 2 cos - 1,
  as the official code does for its non-negative ReLU / bag-of-words features);
  S~ = beta S_I + (1 - beta) S_T;   S = mu [(1 - eta) S~ + eta S~ S~^T / m];
  codes B = tanh(alpha h) of an image network and a text network (alpha = sqrt(epoch + 1));
  loss = ||mu-scaled S - cos(B_I, B_T)||^2 + lambda1 ||S - cos(B_I, B_I)||^2
         + lambda2 ||S - cos(B_T, B_T)||^2   (mean squared errors, as the official code).

The ablation variants of the paper's Table 1 (DJSRH-1 ... DJSRH-6) are configuration overrides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import image_backbone, mlp
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import Batch, TorchMethod


class _CodeNet(nn.Module):
    """features -> hidden (ReLU) -> K, code = tanh(alpha * h); alpha set by the trainer."""

    def __init__(self, trunk: nn.Module, hidden: int, bits: int):
        super().__init__()
        self.trunk = trunk
        self.encode = nn.Linear(hidden, bits)
        self.alpha = 1.0

    def forward(self, x):
        return torch.tanh(self.alpha * self.encode(self.trunk(x)))


def cosine_affinity(x: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Cosine similarities of the rows of x; `rescale` maps them to 2 cos - 1 (the official code,
    whose features are non-negative so cos lies in [0, 1])."""
    x = F.normalize(x, dim=1)
    s = x @ x.t()
    return s * 2 - 1 if rescale else s


def joint_semantics_affinity(s_img: torch.Tensor, s_txt: torch.Tensor, beta: float, eta: float, mu: float) -> torch.Tensor:
    """S = mu [(1 - eta) S~ + eta S~ S~^T / m], S~ = beta S_I + (1 - beta) S_T (the paper's joint-semantics affinity)."""
    m = s_img.shape[0]
    s_tilde = beta * s_img + (1 - beta) * s_txt
    return mu * ((1 - eta) * s_tilde + eta * (s_tilde @ s_tilde.t()) / m)


def alpha_at(epoch: int, schedule: str) -> float:
    if schedule == "sqrt":
        return math.sqrt(epoch + 1.0)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"alpha_schedule must be 'sqrt' or 'constant', got {schedule!r}")


@register_method
class DJSRH(TorchMethod):
    name = "djsrh"
    code_type = "binary"
    schedule = "epochs"
    drop_last = True  # the official loader drops the last partial batch
    info = MethodInfo(
        display_name="DJSRH",
        full_name="Deep Joint-Semantics Reconstructing Hashing",
        paper="S. Su, Z. Zhong, C. Zhang. Deep Joint-Semantics Reconstructing Hashing for Large-Scale "
        "Unsupervised Cross-Modal Retrieval.",
        venue="ICCV",
        year=2019,
        code_url="https://github.com/zzs1994/DJSRH",
        status="faithful",
        supervision="unsupervised",
        deviations=(
            "Images enter as precomputed feature vectors: an MLP (features -> 4096 -> K) replaces the fine-tuned AlexNet, S_I is computed from the given features, and the `image_backbone` seam accepts only 'features' for now.",
            "Network inputs are z-scored per dimension on the training split (the affinities S_I, S_T "
            "use the features as given, as the paper).",
        ),
    )
    # tune searches: loss weights, learning rates, training length (wiki default 200 included)
    params = {
        "image_backbone": Param("features", choices=("features",),
            doc="seam for a raw-pixel CNN; only precomputed features now"),
        "standardize": Param(True, doc="z-score the network inputs (the affinities use raw features)"),
        'img_hidden': Param(4096, low=1, smoke=32, doc="stands in for AlexNet's 4096-d fc7 under the hash layer"),
        "txt_hidden": Param(4096, low=1, smoke=32, doc="official TxtNet: bag of words -> 4096 -> K"),
        "beta": Param(0.6, low=0.0, search=("float", 0.1, 0.9),
            doc="weight of S_I in S~ (official: WIKI 0.3, MIRFlickr 0.9, NUS-WIDE 0.6)"),
        "eta": Param(0.4, low=0.0, search=("float", 0.1, 0.9),
            doc="weight of the second-order term S~ S~^T / m (official)"),
        "mu": Param(1.5, low=0.0, search=("float", 1.0, 2.0), doc="scale of the target S (official)"),
        "lambda1": Param(0.1, low=0.0, search=("logfloat", 0.01, 1.0),
            doc="image-image reconstruction weight (cross-modal weight is 1)"),
        "lambda2": Param(0.1, low=0.0, search=("logfloat", 0.01, 1.0), doc="text-text reconstruction weight"),
        "alpha_schedule": Param("sqrt", choices=("sqrt", "constant"),
            doc="tanh(alpha h): alpha = sqrt(epoch + 1) ('constant': alpha = 1)"),
        "affinity_rescale": Param(True, doc="S_I, S_T = 2 cos - 1 (official code)"),
        "epochs": Param(80, low=1, high=MAX_EPOCHS, search=("int", 40, 200), smoke=2,
            doc="official: MIRFlickr / NUS-WIDE 80, WIKI 200"),
        "batch_size": Param(32, low=1, doc="official"),
        "lr_img": Param(0.001, low=0.0, search=("logfloat", 0.0001, 0.1),
            doc="official SGD learning rates (MIRFlickr / NUS-WIDE)"),
        "lr_txt": Param(0.01, low=0.0, search=("logfloat", 0.001, 0.1), doc="text network learning rate (SGD)"),
        "momentum": Param(0.9, low=0.0, high=1.0, doc="SGD momentum"),
        "weight_decay": Param(0.0005, low=0.0, doc="weight decay"),
    }
    dataset_defaults = {
        # official settings.py, WIKI's 200 epochs included (about 50 s per fit on one idle core)
        "wiki": {"beta": 0.3, "lambda1": 0.3, "lambda2": 0.3, "lr_img": 0.01, "lr_txt": 0.01, "epochs": 200},
        "mirflickr25k": {"beta": 0.9, "lambda1": 0.1, "lambda2": 0.1, "lr_img": 0.001, "lr_txt": 0.01, "epochs": 80},
        "nuswide-tc10": {"beta": 0.6, "lambda1": 0.1, "lambda2": 0.1, "lr_img": 0.001, "lr_txt": 0.01, "epochs": 80},
    }
    # Table 1 of the paper (NUS-WIDE, mAP@50). Each row adds one component to the previous one;
    # beta keeps the dataset's value from DJSRH-3 on. "DJSRH" is the full model.
    variants = {
        "DJSRH-1": {"beta": 1.0, "eta": 0.0, "mu": 1.0, "lambda1": 0.0, "lambda2": 0.0},  # S = S_I
        "DJSRH-2": {"beta": 0.0, "eta": 0.0, "mu": 1.0, "lambda1": 0.0, "lambda2": 0.0},  # S = S_T
        "DJSRH-3": {"eta": 0.0, "mu": 1.0, "lambda1": 0.0, "lambda2": 0.0},  # beta S_I + (1-beta) S_T
        "DJSRH-4": {"eta": 0.4, "mu": 1.0, "lambda1": 0.0, "lambda2": 0.0},  # + eta = 0.4
        "DJSRH-5": {"eta": 0.4, "mu": 1.5, "lambda1": 0.0, "lambda2": 0.0},  # + mu = 1.5
        # The next row of Table 1, "DJSRH" (+ lambda1, lambda2: the full model), is the method
        # itself, i.e. the runner's base run (variant "").
        "DJSRH-6": {"alpha_schedule": "constant"},  # full model without the growing alpha
    }

    def build(self):
        c = self.config
        backbone, img_dim = image_backbone(c["image_backbone"], self.image_dim)
        hi, ht = c["img_hidden"], c["txt_hidden"]
        return {
            "img": _CodeNet(nn.Sequential(backbone, mlp([img_dim, hi])), hi, self.bits),
            "txt": _CodeNet(mlp([self.text_dim, ht]), ht, self.bits),
        }

    def encoder(self, modality):
        return self.net["img" if modality == "image" else "txt"]

    def target_affinity(self, raw_img: torch.Tensor, raw_txt: torch.Tensor) -> torch.Tensor:
        """The joint-semantics affinity S of one batch, from the original features only."""
        c = self.config
        rescale = c["affinity_rescale"]
        return joint_semantics_affinity(
            cosine_affinity(raw_img, rescale), cosine_affinity(raw_txt, rescale), c["beta"], c["eta"], c["mu"]
        )

    def loss_terms(self, code_img: torch.Tensor, code_txt: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three reconstruction errors and their weighted total (official code's form)."""
        c = self.config
        bi, bt = F.normalize(code_img, dim=1), F.normalize(code_txt, dim=1)
        terms = {
            "cross": F.mse_loss(bi @ bt.t(), s),
            "img_img": F.mse_loss(bi @ bi.t(), s),
            "txt_txt": F.mse_loss(bt @ bt.t(), s),
        }
        terms["total"] = terms["cross"] + c["lambda1"] * terms["img_img"] + c["lambda2"] * terms["txt_txt"]
        return terms

    def make_optimizers(self):
        c = self.config
        sgd = dict(momentum=c["momentum"], weight_decay=c["weight_decay"])
        return {"img": torch.optim.SGD(self.net["img"].parameters(), lr=c["lr_img"], **sgd),
                "txt": torch.optim.SGD(self.net["txt"].parameters(), lr=c["lr_txt"], **sgd)}

    def start_epoch(self):
        alpha = alpha_at(self.done, self.config["alpha_schedule"])
        self.net["img"].alpha = self.net["txt"].alpha = alpha
        return {"alpha": alpha}

    def loss(self, batch: Batch):
        # Unsupervised: the trainer gives no labels (batch.y is None); S comes from raw features.
        with torch.no_grad():
            s = self.target_affinity(batch.raw("image"), batch.raw("text"))
        terms = self.loss_terms(self.net["img"](batch.x["image"]), self.net["txt"](batch.x["text"]), s)
        return terms["total"], terms

    def state_dict(self):
        return {**super().state_dict(), "alpha": float(self.net["img"].alpha)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.net["img"].alpha = self.net["txt"].alpha = float(state.get("alpha", 1.0))
