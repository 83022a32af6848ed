"""Datasets from raw images and texts: a pretrained backbone (CLIP, BLIP-2, SigLIP through
Hugging Face `transformers`, the optional extra `backbones`) turns them into aligned feature
files plus a manifest in the data root, which the data layer reads like any other dataset.

inputs    -> the images folder and the texts/labels/split files, checked before any model loads
backbones -> loading (hub id or local folder) and encoding, on the GPU in fp16/bf16 when present
extract   -> sharded, resumable extraction; the dataset folder appears only when complete"""
