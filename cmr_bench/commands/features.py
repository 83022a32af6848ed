"""`cmr-bench features extract`: a dataset of backbone features from raw images and texts."""

from __future__ import annotations

import os
from pathlib import Path

from cmr_bench.errors import CmrBenchError

ORDER = 15


def register(sub) -> None:
    from cmr_bench.features.backbones import BACKBONES, INSTALL_HINT
    from cmr_bench.features.layouts import LAYOUTS

    parser = sub.add_parser("features", help="extract datasets of backbone features (CLIP, BLIP-2, SigLIP) from raw images and texts")
    fsub = parser.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    p = fsub.add_parser(
        "extract",
        help=f"images + texts -> aligned feature files and a manifest in the data root (needs `{INSTALL_HINT}`)",
        description="Each of --texts, --labels and --split is a tab-separated file keyed by the image's path "
                    "relative to --images: '<image><TAB><caption>', '<image><TAB><label>[,<label>...]', "
                    "'<image><TAB>train|test'. Rows follow the order of --texts. See docs/datasets.md.",
    )
    p.add_argument("--images", help="folder of images (searched recursively)")
    p.add_argument("--texts", help="TSV: image path, caption (one line per image)")
    p.add_argument("--labels", help="TSV: image path, label (comma-separated for multi-label)")
    p.add_argument("--split", help="TSV: image path, train or test")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="read a raw release in its own layout from --raw instead of --images/--texts/--labels/--split")
    p.add_argument("--raw", default=None, help="the raw release's folder (with --layout)")
    p.add_argument("--classes", default=None, help="class names in label order, one a line (default: sorted labels)")
    p.add_argument("--backbone", required=True, choices=BACKBONES, help="the model family of --model")
    p.add_argument("--model", required=True, help="Hugging Face hub id or local folder (save_pretrained layout)")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit of --model (default: main)")
    p.add_argument("--out", required=True, help="DATA_ROOT/NAME: the new dataset's folder; NAME is its name")
    p.add_argument("--paper-dataset", default=None,
                   help="the benchmark these images come from (e.g. wiki): Table V prints ours beside its published rows")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto: bf16/fp16 on the GPU, fp32 on the CPU")
    p.add_argument("--batch-size", default="32", help="pairs per forward pass (default 32)")
    p.add_argument("--shard-size", default="1024", help="pairs per resumable shard")
    p.add_argument("--workers", default="4", help="threads decoding images")
    p.add_argument("--max-text-tokens", default=None, help="truncate texts to this many tokens (default: the model's limit)")
    p.add_argument("--allow-extra-images", action="store_true",
                   help="images in --images without a caption are ignored instead of an error")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder made from other inputs")
    p.set_defaults(handler=cmd_extract)


def cmd_extract(args) -> int:
    from cmr_bench.commands.run import positive_int
    from cmr_bench.features.backbones import load_backbone, require_extra
    from cmr_bench.features.extract import extract
    from cmr_bench.features.inputs import read_items

    batch_size = positive_int(args.batch_size, "--batch-size")
    shard_size = positive_int(args.shard_size, "--shard-size")
    workers = positive_int(args.workers, "--workers")
    max_tokens = positive_int(args.max_text_tokens, "--max-text-tokens") if args.max_text_tokens else None
    args.paper_dataset = args.paper_dataset or args.layout  # a known layout is its benchmark's images
    if args.paper_dataset:
        from cmr_bench.data.manifest import find_manifest

        find_manifest(args.paper_dataset)  # an unknown name is an error now, not a blank table later
    require_extra()
    given = Path(args.out).expanduser()
    if given.name in ("", ".", ".."):  # `D/x/..` names D itself: never a dataset folder to replace
        raise CmrBenchError(f"--out {args.out} must end in the new dataset's name (DATA_ROOT/NAME)")
    out = Path(os.path.abspath(given))  # not resolve(): a link at --out is refused, never followed
    if out.is_symlink():
        raise CmrBenchError(f"--out {out} is a symbolic link; give the dataset folder itself")
    if out.exists() and not out.is_dir():
        raise CmrBenchError(f"--out {out} exists and is not a folder")
    if not out.parent.is_dir():
        raise CmrBenchError(f"--out: the folder {out.parent} does not exist")
    generic = {"--images": args.images, "--texts": args.texts, "--labels": args.labels, "--split": args.split}
    if args.layout:
        given = [k for k, v in generic.items() if v]
        if given or not args.raw:
            raise CmrBenchError(f"--layout {args.layout} reads everything from --raw DIR"
                                + (f"; drop {', '.join(given)}" if given else ""))
        from cmr_bench.features.layouts import layout_items

        items = layout_items(args.layout, Path(args.raw))
    else:
        lacking = [k for k, v in generic.items() if not v]
        if lacking or args.raw:
            raise CmrBenchError("give --images, --texts, --labels and --split (or --layout with --raw)"
                                + (f"; missing {', '.join(lacking)}" if lacking else ""))
        items = read_items(Path(args.images), Path(args.texts), Path(args.labels), Path(args.split),
                           Path(args.classes) if args.classes else None, args.allow_extra_images)
    result = extract(
        items, out,
        lambda: load_backbone(args.backbone, args.model, args.device, args.dtype, max_tokens, args.revision),
        batch_size=batch_size, shard_size=shard_size, workers=workers, paper_dataset=args.paper_dataset,
        overwrite=args.overwrite, log=print,
    )
    if not result.up_to_date:
        print(f"wrote {result.path}: {result.items} pairs, image {result.image_dim}-d, text {result.text_dim}-d; "
              f"{result.pairs_per_s:.1f} pairs/s ({result.images_per_s:.1f} images/s, {result.texts_per_s:.1f} texts/s)"
              + (f" (resumed after {result.shards_done_before} of {result.shards} shards)" if result.shards_done_before else ""))
    from cmr_bench.data.root import data_root

    root_flag = "" if out.parent == data_root(getattr(args, "data_root", None)) else f" --data-root {out.parent}"
    print(f"next: cmr-bench{root_flag} run --methods backbone-zero-shot,sdcmr --dataset {result.name}")
    return 0
