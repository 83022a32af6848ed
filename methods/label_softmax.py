"""label-softmax: a plain supervised classifier per modality, as a reference row.

Each modality gets its own classifier of the standardised features, trained on the training
pairs' labels (both modalities share the label of their pair, nothing else ties them):
  linear  d_m -> c                         (default)
  mlp     d_m -> hidden (ReLU) -> c         (variant `mlp`)
Loss: softmax cross-entropy for single-label data, binary cross-entropy with logits for
multi-label data, summed over the two modalities. Codes: the class-probability vector (softmax,
or per-class sigmoids for multi-label data), compared by cosine like every real-valued method.

What it means: such codes only say "which class does this item look like"; a cross-modal
method that does not beat this row on a dataset adds nothing there over two independent
classifiers (docs/methods.md).
"""

from __future__ import annotations

import torch
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import label_loss, mlp
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Batch, TorchMethod


@register_method
class LabelSoftmax(TorchMethod):
    name = "label-softmax"
    code_type = "real"
    schedule = "epochs"
    info = MethodInfo(
        display_name="Label-softmax",
        full_name="Per-modality label classifier (reference)",
        paper="reference row: class-probability vectors of two independent classifiers",
        venue="cmr-bench",
        year=2026,
        code_url=None,
        status="baseline",
        supervision="supervised",
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "hidden": Param(0, low=0, doc="0: linear classifier; > 0: one hidden ReLU layer of this width"),
        "epochs": Param(60, low=1, high=MAX_EPOCHS, search=("int", 20, 120), smoke=2, doc="training epochs"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "lr": Param(0.001, low=0.0, search=("logfloat", 0.0001, 0.01), doc="learning rate"),
        "weight_decay": Param(0.0001, low=0.0, search=("logfloat", 1e-06, 0.01), doc="weight decay"),
        "standardize": Param(True, doc="z-score inputs with training statistics"),
    }
    variants = {"mlp": {"hidden": 512}}

    def build(self) -> nn.Module:
        h = self.config["hidden"]
        dims = {"image": self.image_dim, "text": self.text_dim}
        return nn.ModuleDict({m: mlp([d, h, self.num_classes] if h > 0 else [d, self.num_classes], final_activation=False)
                              for m, d in dims.items()})

    def encoder(self, modality: str):
        net = self.net[modality]
        squash = torch.sigmoid if self.multilabel else (lambda z: torch.softmax(z, dim=1))
        return lambda x: squash(net(x))

    def loss(self, batch: Batch):
        terms = {f"ce_{m}": label_loss(self.net[m](batch.x[m]), batch.y, self.multilabel) for m in MODALITIES}
        total = sum(terms.values())
        return total, {"L": total, **terms}
