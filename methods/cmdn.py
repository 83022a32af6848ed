"""CMDN: cross-media multiple deep networks (Peng, Huang, Qi; "Cross-media shared representation
by hierarchical learning with multiple deep networks", IJCAI 2016).

RE-IMPLEMENTATION from the paper's description (the official code's configuration files were
read afterwards, for its layer sizes and schedule only; they also use labels, see docs/methods.md).

Two learning stages, as the paper:
  Stage 1, separate representation of each modality from multiple deep networks:
    * intra-modality: an autoencoder per modality, x_m -> a_m -> x_m (the paper: stacked
      autoencoders),
    * inter-modality: a bimodal autoencoder whose joint layer, computed from ONE modality,
      reconstructs BOTH (the paper: a multimodal DBN / bimodal autoencoder): x_m -> b_m -> (x_I, x_T),
    * the separate representation r_m = [a_m, b_m] combines the two (complementary) views.
  Stage 2, shared representation by a two-level stacked network on the separate
  representations (stage-1 networks fixed):
    * first level: an autoencoder per modality, r_m -> z_m -> r_m,
    * second level: the correspondence (Corr-AE) objective on z_I, z_T, the codes c_m linked by
      the correlation loss and each reconstructing its own z_m:
        (1 - alpha) (||z_I - z^_I||^2 + ||z_T - z^_T||^2) + alpha ||c_I - c_T||^2.
Retrieval: the second-level codes c_m (cosine).

Unsupervised (our reading: the IJCAI paper learns its shared representation without labels;
its follow-up CCL adds semantic supervision). Losses are per-pair squared errors averaged over
the batch; sigmoid hidden units as the paper's autoencoders; stage 1 takes `stage1_epochs` of the
`epochs`, stage 2 the rest. The paper's layer-wise RBM pre-training is replaced by end-to-end
training of each autoencoder with Adam.
"""

from __future__ import annotations

import torch
from torch import nn

from cmr_bench.hparams import MAX_EPOCHS, Param
from cmr_bench.methods._blocks import correspondence_loss, sigmoid_mlp, sq_err
from cmr_bench.plugin import MethodInfo
from cmr_bench.registry import register_method
from cmr_bench.trainer import MODALITIES, Averager, TorchMethod, adam


class CMDNNet(nn.Module):
    def __init__(self, dims: dict[str, int], h1: int, h2: int, k: int):
        super().__init__()
        # stage 1
        self.intra_enc = nn.ModuleDict({m: sigmoid_mlp([d, h1]) for m, d in dims.items()})
        self.intra_dec = nn.ModuleDict({m: nn.Linear(h1, d) for m, d in dims.items()})
        self.inter_enc = nn.ModuleDict({m: sigmoid_mlp([d, h1]) for m, d in dims.items()})
        self.inter_dec = nn.ModuleDict({m: nn.Linear(h1, d) for m, d in dims.items()})  # joint layer -> each modality
        # stage 2
        self.level1_enc = nn.ModuleDict({m: sigmoid_mlp([2 * h1, h2]) for m in dims})
        self.level1_dec = nn.ModuleDict({m: nn.Linear(h2, 2 * h1) for m in dims})
        self.level2_enc = nn.ModuleDict({m: sigmoid_mlp([h2, k]) for m in dims})
        self.level2_dec = nn.ModuleDict({m: nn.Linear(k, h2) for m in dims})

    def stage1_modules(self):
        return [self.intra_enc, self.intra_dec, self.inter_enc, self.inter_dec]

    def stage2_modules(self):
        return [self.level1_enc, self.level1_dec, self.level2_enc, self.level2_dec]

    def separate(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return torch.cat([self.intra_enc[modality](x), self.inter_enc[modality](x)], 1)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.level2_enc[modality](self.level1_enc[modality](self.separate(x, modality)))


def stage1_loss(net: CMDNNet, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    intra = sum(sq_err(net.intra_dec[m](net.intra_enc[m](x[m])), x[m]) for m in MODALITIES)
    # the joint layer from one modality reconstructs both
    inter = sum(sq_err(net.inter_dec[target](net.inter_enc[m](x[m])), x[target]) for m in MODALITIES for target in MODALITIES)
    return {"L_intra": intra, "L_inter": inter, "L_stage1": intra + inter}


def stage2_loss(net: CMDNNet, r: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    z = {m: net.level1_enc[m](r[m]) for m in MODALITIES}
    level1 = sum(sq_err(net.level1_dec[m](z[m]), r[m]) for m in MODALITIES)
    # the second level reconstructs the first level's output as it stands (not a moving target)
    target = {m: z[m].detach() for m in MODALITIES}
    codes = {m: net.level2_enc[m](z[m]) for m in MODALITIES}
    corr = correspondence_loss(codes["image"], codes["text"], target["image"], target["text"],
                               net.level2_dec["image"], net.level2_dec["text"], alpha, "corr")
    return {"L_level1": level1, "L_level2": corr["L"], "L_C": corr["L_C"], "L_stage2": level1 + corr["L"]}


@register_method
class CMDN(TorchMethod):
    name = "cmdn"
    code_type = "real"
    schedule = "epochs"
    info = MethodInfo(
        display_name="CMDN",
        full_name="Cross-Media Multiple Deep Networks",
        paper="Y. Peng, X. Huang, J. Qi, Cross-Media Shared Representation by Hierarchical Learning with Multiple Deep Networks",
        venue="IJCAI",
        year=2016,
        code_url=None,
        status="re-implementation",
        supervision="unsupervised",
        deviations=(
            "Re-implemented from the paper's description; the official configuration files were read only afterwards, to record layer sizes and schedule, and their label-supervised networks are not trained here (docs/methods.md).",
            "Every network is a one-hidden-layer sigmoid autoencoder on the benchmark's feature vectors, trained end to end with Adam instead of layer-wise RBM pre-training and fine-tuning.",
            "The inter-modality network is a bimodal autoencoder fed one modality at a time (each input reconstructs both) instead of a multimodal DBN.",
            "Layer sizes, alpha = 0.8, the stage split and epochs are our choices.",
            "Schedule: 30 epochs (15 per stage) with 512/256-unit layers, kept over 60 epochs with 1024/512-unit layers (no gain beyond the seed noise on wiki's validation split, docs/methods.md); --set epochs=60 --set stage1_epochs=30 --set h1=1024 --set h2=512 gives the longer one.",
        ),
    )
    # tune searches: loss weights, learning rate, width, training length (<= 2x default)
    params = {
        "h1": Param(512, low=1, smoke=16, doc="first hidden width"),
        "h2": Param(256, low=1, smoke=8, doc="second hidden width"),
        "k": Param(64, low=1, search=("choice", [32, 64, 128]), smoke=4, doc="code dimension"),
        "alpha": Param(0.8, low=0.0, high=1.0, search=("float", 0.5, 0.95),
            doc="weight of the correlation term against reconstruction (1 - alpha)"),
        "lr": Param(0.001, low=0.0, search=("logfloat", 0.0001, 0.01), doc="learning rate"),
        "batch_size": Param(64, low=1, smoke=16, doc="minibatch size"),
        "epochs": Param(30, low=1, high=MAX_EPOCHS, search=("int", 20, 60), smoke=3, doc="training epochs"),
        "stage1_epochs": Param(15, low=0, high=MAX_EPOCHS, smoke=1,
            doc="epochs of the first (separate-representation) stage, within epochs"),
        "standardize": Param(True, doc="z-score inputs with training statistics (false: raw features)"),
    }

    @classmethod
    def check_config(cls, config, **dims):  # one stage inside the other: no single declaration says it
        if not 0 <= config["stage1_epochs"] <= config["epochs"]:
            raise ValueError(f"stage1_epochs must lie in [0, epochs], got {config['stage1_epochs']}")

    def build(self) -> nn.Module:
        c = self.config
        self.check_config(c)
        return CMDNNet({"image": self.image_dim, "text": self.text_dim}, c["h1"], c["h2"], c["k"])

    def encoder(self, modality: str):
        return lambda x: self.net(x, modality)

    def make_optimizers(self):
        lr = self.config["lr"]
        params = lambda mods: [p for mod in mods for p in mod.parameters()]  # noqa: E731
        return {"stage1": adam(params(self.net.stage1_modules()), lr), "stage2": adam(params(self.net.stage2_modules()), lr)}

    def train_epoch(self):
        net, x_all = self.net, self.inputs.x
        stage1 = self.done < self.config["stage1_epochs"]
        if not stage1 and not hasattr(self, "_separate"):
            with torch.no_grad():  # stage-1 networks are fixed from here on
                self._separate = {m: net.separate(x_all[m], m) for m in MODALITIES}
        mean = Averager()
        for idx in self.epoch_batches():
            idx = idx.to(self.device)
            if stage1:
                terms = stage1_loss(net, {m: x_all[m][idx] for m in MODALITIES})
                self.update(terms["L_stage1"], "stage1")
            else:
                terms = stage2_loss(net, {m: self._separate[m][idx] for m in MODALITIES}, self.config["alpha"])
                self.update(terms["L_stage2"], "stage2")
            mean.add(terms)
        return {"stage": 1.0 if stage1 else 2.0, **mean.result()}

    def fit(self, train, val=None):
        self.__dict__.pop("_separate", None)
        try:
            return super().fit(train, val)
        finally:
            self.__dict__.pop("_separate", None)
