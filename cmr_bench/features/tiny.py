"""Tiny backbones with random weights (a few small layers), built locally in the exact
save_pretrained layout of the real checkpoints, tokenizer and image processor included: the
extractor's real loading code runs on them offline, in seconds. For tests, benchmarks of the
extractor's own overhead and smoke checks; their features mean nothing."""

from __future__ import annotations

from pathlib import Path

WORDS = ["a", "an", "the", "photo", "of", "cat", "dog", "bird", "on", "grass", "red", "green", "blue"]


def _tokenizer(words=WORDS):
    """A word-level tokenizer built here ([CLS] words [SEP]): no vocabulary download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=16), len(vocab)


def build_tiny(kind: str, folder: Path, image_size: int = 32) -> Path:
    """Save a tiny `kind` ("clip", "siglip" or "blip2") model into folder/tiny-<kind>; returns that path."""
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForImageTextRetrieval,
        BlipImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    torch.manual_seed(0)
    tokenizer, vocab_size = _tokenizer()
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(image_size=image_size, patch_size=8, **layers)
    text = dict(vocab_size=vocab_size, max_position_embeddings=16, pad_token_id=0, **layers)
    square = {"height": image_size, "width": image_size}
    if kind == "clip":
        model = CLIPModel(CLIPConfig(text_config=dict(text, bos_token_id=2, eos_token_id=3), vision_config=vision,
                                     projection_dim=24))
        processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=square)
    elif kind == "siglip":
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        processor = SiglipImageProcessor(size=square)
    elif kind == "blip2":
        # The Q-Former's text branch (use_qformer_text_input) is what the ITC text embedding needs.
        qformer = dict(text, encoder_hidden_size=32, use_qformer_text_input=True)
        model = Blip2ForImageTextRetrieval(Blip2Config(vision_config=vision, qformer_config=qformer,
                                                       num_query_tokens=4, image_text_hidden_size=16))
        processor = BlipImageProcessor(size=square)
    else:
        raise ValueError(f"unknown tiny backbone {kind!r}")
    path = Path(folder) / f"tiny-{kind}"
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return path
