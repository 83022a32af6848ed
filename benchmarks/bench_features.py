"""Throughput of `cmr-bench features extract` with the tiny random backbones
(cmr_bench/features/tiny.py): what the extractor itself costs (JPEG decoding, preprocessing,
batching, a forward pass through a 2-layer model, shard writing), not what a real ViT-L costs.

    python benchmarks/bench_features.py [--n 240] [--device auto] [--batch-size 32]

Prints pairs/s (the extraction loop, wall clock), images/s and texts/s as the extractor
measures them (see cmr_bench.features.extract.Result) and the end-to-end wall time including
model loading and writing the dataset."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_images(folder: Path, n: int, size=(320, 240)) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir(parents=True)
    rows = {"texts": [], "labels": [], "split": []}
    for i in range(n):
        # Smooth noise: JPEG sizes like photos' (tens of kB), not like flat colour.
        small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(images / f"{i:05d}.jpg", quality=90)
        rows["texts"].append(f"{i:05d}.jpg\ta photo of a {['red', 'green', 'blue'][i % 3]} bird on the grass")
        rows["labels"].append(f"{i:05d}.jpg\t{i % 3}")
        rows["split"].append(f"{i:05d}.jpg\t{'test' if i % 5 == 0 else 'train'}")
    out = {"images": images}
    for name, lines in rows.items():
        out[name] = folder / f"{name}.tsv"
        out[name].write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-sizes", default="32,224", help="the tiny models' input sizes")
    args = parser.parse_args()

    from cmr_bench.features.backbones import load_backbone
    from cmr_bench.features.extract import extract
    from cmr_bench.features.inputs import read_items
    from cmr_bench.features.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = make_images(tmp / "raw", args.n)
        items = read_items(raw["images"], raw["texts"], raw["labels"], raw["split"])
        print(f"{args.n} JPEG images 320x240, batch {args.batch_size}, {args.workers} decode threads, "
              f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
        print(f"{'backbone':8} {'input':>5} {'device':6} {'pairs/s':>8} {'images/s':>9} {'texts/s':>9} {'wall s':>7}")
        for size in [int(s) for s in args.image_sizes.split(",")]:
            for kind in ("clip", "siglip", "blip2"):
                model = build_tiny(kind, tmp / f"models{size}", image_size=size)
                out = tmp / "data" / f"{kind}-{size}"
                out.parent.mkdir(exist_ok=True)
                t0 = time.perf_counter()
                holder = {}

                def loader(kind=kind, model=model, holder=holder):
                    holder["bb"] = load_backbone(kind, str(model), args.device)
                    return holder["bb"]

                r = extract(items, out, loader, batch_size=args.batch_size, workers=args.workers)
                wall = time.perf_counter() - t0
                print(f"{kind:8} {size:>5} {holder['bb'].device:6} {r.pairs_per_s:8.1f} {r.images_per_s:9.1f} "
                      f"{r.texts_per_s:9.1f} {wall:7.2f}")


if __name__ == "__main__":
    main()
