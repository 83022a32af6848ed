"""Pretrained image-text backbones through Hugging Face `transformers` (the optional extra
`backbones`). Each backbone maps images and texts into its own aligned embedding space, the one
its contrastive (ITC) loss was trained in, so image and text features have the same length and
cosine between them is the backbone's zero-shot retrieval score.

- clip:   CLIPModel.get_image_features / get_text_features (projected embeddings).
- siglip: the same for SigLIP (and SigLIP 2) checkpoints; texts padded to the model's length,
          as SigLIP was trained.
- blip2:  Blip2ForImageTextRetrieval (an ITM/ITC checkpoint such as Salesforce/blip2-itm-vit-g):
          text = normalised projection of the Q-Former's [CLS]; image = mean of the normalised
          projected query embeddings, re-normalised (ITC scores the max over the 32 queries;
          one vector per item needs a pooling, and the mean is the one documented here)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_bench.errors import CmrBenchError

BACKBONES = ("clip", "blip2", "siglip")
INSTALL_HINT = 'pip install "cmr-bench[backbones]"'


def require_extra() -> None:
    import importlib.util

    missing = [m for m in ("transformers", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        raise CmrBenchError(f"feature extraction needs {', '.join(missing)}: install the extra with `{INSTALL_HINT}`")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CmrBenchError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if device not in ("cpu", "cuda"):
        raise CmrBenchError(f"--device must be auto, cpu or cuda, got '{device}'")
    return device


def resolve_dtype(dtype: str, device: str):
    """auto: bf16 on GPUs that have it, else fp16 on the GPU; fp32 on the CPU."""
    import torch

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        if device != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in names:
        raise CmrBenchError(f"--dtype must be auto, float32, float16 or bfloat16, got '{dtype}'")
    return names[dtype]


@dataclass
class Backbone:
    kind: str
    model_id: str
    device: str
    dtype: Any
    model: Any
    tokenizer: Any
    image_processor: Any
    max_text_tokens: int
    revision: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    # --- encoding ------------------------------------------------------------------------
    def preprocess_images(self, images: list) -> dict:
        """PIL images -> the model's input tensors, on the CPU (safe to run in a worker thread)."""
        inputs = self.image_processor(images=images, return_tensors="pt")
        return {k: v for k, v in inputs.items() if hasattr(v, "to")}

    def encode_images(self, images: list) -> np.ndarray:
        return self.encode_preprocessed(self.preprocess_images(images))

    def encode_preprocessed(self, inputs: dict) -> np.ndarray:
        import torch

        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            if self.kind == "blip2":
                out = self._blip2_images(inputs["pixel_values"])
            else:
                out = _pooled(self.model.get_image_features(**inputs))
        return out.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        padding = "max_length" if self.kind == "siglip" else True
        tok = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.max_text_tokens,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        if self.kind == "siglip":
            tok.pop("attention_mask", None)  # SigLIP's text tower was trained without a mask
        with torch.inference_mode():
            if self.kind == "blip2":
                out = self._blip2_texts(tok["input_ids"], tok.get("attention_mask"))
            else:
                out = _pooled(self.model.get_text_features(**tok))
        return out.float().cpu().numpy()

    def _blip2_images(self, pixel_values):
        import torch
        from torch.nn.functional import normalize

        m = self.model
        vision = m.vision_model(pixel_values=pixel_values)[0]
        mask = torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device)
        queries = m.query_tokens.expand(vision.shape[0], -1, -1)
        q = m.qformer(query_embeds=queries, encoder_hidden_states=vision, encoder_attention_mask=mask)[0]
        emb = normalize(m.vision_projection(q.to(m.vision_projection.weight.dtype)), dim=-1)
        return normalize(emb.mean(dim=1), dim=-1)

    def _blip2_texts(self, input_ids, attention_mask):
        from torch.nn.functional import normalize

        m = self.model
        hidden = m.qformer(query_embeds=m.embeddings(input_ids=input_ids), query_length=0,
                           attention_mask=attention_mask)[0]
        return normalize(m.text_projection(hidden[:, 0, :].to(m.text_projection.weight.dtype)), dim=-1)


def _pooled(out):
    """transformers < 5 returns the projected tensor, >= 5 an output whose pooler_output it is."""
    return out if hasattr(out, "dim") else out.pooler_output


def _config_hash(config) -> str:
    data = config.to_dict()
    for k in ("_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype"):
        data.pop(k, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def _hub_commit(model_id: str, revision: str | None) -> str:
    """The commit of the hub snapshot the model was loaded from ("" for a local folder)."""
    from pathlib import Path

    if Path(model_id).is_dir():
        return ""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # an old or odd huggingface_hub: fall back to the config hash
        return ""
    if not isinstance(path, str):
        return ""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else ""


def load_backbone(kind: str, model_id: str, device: str = "auto", dtype: str = "auto",
                  max_text_tokens: int | None = None, revision: str | None = None) -> Backbone:
    if kind not in BACKBONES:
        raise CmrBenchError(f"unknown backbone '{kind}' (choose from {', '.join(BACKBONES)})")
    require_extra()
    import torch
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    # Our progress bar and one-line errors are the interface: no loading bars or advice on stderr.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    cls = transformers.Blip2ForImageTextRetrieval if kind == "blip2" else transformers.AutoModel

    def fail(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CmrBenchError(f"could not load {kind} model '{model_id}': {first}")

    try:
        model_type = getattr(AutoConfig.from_pretrained(model_id, revision=revision), "model_type", "")
    except (OSError, ValueError, KeyError) as exc:
        raise fail(exc) from None
    expected = {"clip": ("clip",), "siglip": ("siglip", "siglip2"), "blip2": ("blip-2",)}[kind]
    if model_type not in expected:  # checked before loading weights into the wrong architecture
        raise CmrBenchError(f"--model '{model_id}' is a '{model_type}' model, not a {kind} one")
    try:
        model, loading = cls.from_pretrained(model_id, dtype=torch_dtype, output_loading_info=True, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
        image_processor = AutoImageProcessor.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise fail(exc) from None
    if kind == "blip2" and not getattr(model.config.qformer_config, "use_qformer_text_input", True):
        raise CmrBenchError(f"'{model_id}' has no Q-Former text branch (use_qformer_text_input is false): BLIP-2 needs an "
                            "image-text retrieval checkpoint, e.g. Salesforce/blip2-itm-vit-g")
    missing = list(loading.get("missing_keys", []))
    if missing:
        # Random weights would give meaningless features without any error.
        hint = " (BLIP-2 needs an image-text retrieval checkpoint, e.g. Salesforce/blip2-itm-vit-g)" if kind == "blip2" else ""
        raise CmrBenchError(f"'{model_id}' lacks {len(missing)} weights of the {kind} model, e.g. {missing[0]}{hint}")
    model.to(device).eval()

    cfg = model.config
    text_cfg = getattr(cfg, "text_config", None) or getattr(cfg, "qformer_config", None)
    limit = int(getattr(text_cfg, "max_position_embeddings", 512))
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    if max_text_tokens is not None:
        if max_text_tokens < 2:
            raise CmrBenchError("--max-text-tokens must be at least 2")
        limit = min(limit, max_text_tokens)
    # transformers < 5 kept the hub commit on the config; 5 resolves it per load, so read it off
    # the cached snapshot's path. A local folder has none: the config's hash stands in.
    commit = getattr(cfg, "_commit_hash", None) or _hub_commit(model_id, revision)
    bb = Backbone(kind, model_id, device, torch_dtype, model, tokenizer, image_processor, limit)
    bb.revision = commit if commit else f"config-sha256:{_config_hash(cfg)[:16]}"
    bb.info = {
        "backbone": kind,
        "model": model_id,
        "revision": bb.revision,
        "model_class": type(model).__name__,
        "model_type": model_type,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": device,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "preprocessing": {
            "image_processor": type(image_processor).__name__,
            "image": _jsonable(image_processor.to_dict()),
            "tokenizer": type(tokenizer).__name__,
            "max_text_tokens": limit,
            "text_padding": "max_length" if kind == "siglip" else "longest",
            "image_pooling": "mean of normalised query embeddings" if kind == "blip2" else "model's projection",
        },
    }
    return bb
