"""Zero-shot retrieval with a pretrained backbone's own aligned embeddings: the "BLIP-2" row of
SDCMR's Table V, what the backbone gets before any method is trained on top of it.

`cmr-bench features extract` stores the backbone's projected image and text embeddings (the
space its contrastive loss aligned) as the dataset's features, so this plugin learns nothing
and encodes each item as its own feature vector (optionally l2-normalised); the evaluator
scores by cosine as for every real-valued method. On features that are not aligned (image and
text of different lengths, e.g. wiki's SIFT/LDA) there is no zero-shot retrieval to speak of:
fit() refuses them unless `mismatch = "pad"`, which zero-pads the shorter modality so the
conformance checks can exercise the plugin on generic synthetic data; its numbers mean nothing."""

from __future__ import annotations

import numpy as np

from cmr_bench.data.types import Split
from cmr_bench.hparams import Param
from cmr_bench.plugin import Method, MethodInfo
from cmr_bench.registry import register_method


@register_method
class BackboneZeroShot(Method):
    name = "backbone-zero-shot"
    code_type = "real"
    # Only meaningful on aligned backbone features: `--methods all` (run on any dataset) leaves it out.
    in_all = False
    info = MethodInfo(
        display_name="Backbone zero-shot",
        full_name="Backbone zero-shot (aligned image/text embeddings, no training)",
        paper=("Li et al., BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders and "
               "Large Language Models"),
        venue="ICML", year=2023, code_url="https://github.com/salesforce/LAVIS", status="baseline",
        supervision="unsupervised",
        deviations=(
            ("Encodes the features `cmr-bench features extract` stored; for BLIP-2 the image vector is the mean of "
             "the 32 normalised query embeddings, where BLIP-2's ITC takes the max similarity over the queries."),
        ),
    )
    # `cmr-bench tune`: deterministic, so a grid over its few knobs (cmr_bench/tuning.py)
    params = {
        "normalize": Param(True, search=("choice", [True, False]),
            doc="L2-normalise the backbone embeddings before ranking"),
        "mismatch": Param("error", choices=("error", "pad"), smoke="pad",
            doc="image and text embeddings of different lengths: error, or zero-pad the shorter"),
    }

    def fit(self, train: Split, val: Split | None = None):
        mode = self.config["mismatch"]
        if mode not in ("error", "pad"):
            raise ValueError(f"mismatch must be 'error' or 'pad', got {mode!r}")
        if self.image_dim != self.text_dim and mode == "error":
            raise ValueError(
                f"backbone-zero-shot needs aligned features of one length (image {self.image_dim}-d, text "
                f"{self.text_dim}-d): run it on a dataset made by `cmr-bench features extract`")
        return [{"step": 0}]

    def encode(self, features: np.ndarray, modality: str) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        width = max(self.image_dim, self.text_dim)
        if x.shape[1] < width:
            x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
        if self.config["normalize"]:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0)  # an all-zero row stays zero
        return x.astype(np.float32)

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass
