"""Extract a dataset of backbone features from raw images and texts.

Work happens in `.<name>.partial/` beside the destination: features are written there one
shard at a time (atomically), so an interrupted run resumes at the first unfinished shard; a
run with other inputs, model or settings starts over. When every shard is done the shards are
joined into `features.npz`, the manifest is written, and the folder is renamed to its final
name: a dataset folder either is complete or does not exist. Bad input (an unreadable image,
a caption count that does not match) removes the work folder too."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_bench.data.loader import sha256_file
from cmr_bench.errors import CmrBenchError, DataError
from cmr_bench.features.inputs import Items, check_images_open, load_image
from cmr_bench.safe_io import swap_folder

FEATURES_FILE = "features.npz"
JOB_FILE = "job.json"
INFO_FILE = "extraction.json"
ITEMS_FILE = "items.tsv"


@dataclass
class Result:
    path: Path
    name: str
    items: int
    image_dim: int
    text_dim: int
    shards_done_before: int
    shards: int
    # Over the batches computed in this run. images: waiting for decoded + preprocessed batches
    # (worker threads) plus the forward pass; texts: tokenising plus the forward pass; pairs:
    # the whole loop, wall clock, shard writing included.
    images_per_s: float
    texts_per_s: float
    pairs_per_s: float = 0.0
    up_to_date: bool = False


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _ours(folder: Path, marker: str) -> dict | None:
    """The parsed marker file when `folder` is a real folder (not a link) that this suite made
    (its marker is a regular JSON file holding a `job`/`inputs` record); else None."""
    from cmr_bench.safe_io import read_text

    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        data = json.loads(read_text(folder / marker, "extraction record"))
    except (CmrBenchError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    job = data.get("job", {}) if marker == INFO_FILE else data
    return data if isinstance(job, dict) and "inputs" in job else None


def _refuse_unless_ours(folder: Path, marker: str, why: str) -> dict:
    if folder.is_symlink():
        raise CmrBenchError(f"{folder} is a symbolic link; refusing to {why} through it")
    found = _ours(folder, marker)
    if found is None:
        raise CmrBenchError(f"{folder} exists and was not made by `cmr-bench features extract` (no valid {marker}); "
                            f"refusing to {why} it: move it away or choose another --out")
    return found


def _job_key(items: Items, backbone_info: dict, batch_size: int, shard_size: int) -> dict:
    # Batch size changes nothing but padding in some tokenizers; it is part of the key anyway so
    # that every shard of one dataset comes from one configuration.
    return {
        "inputs": items.fingerprint(),
        "items": len(items),
        "backbone": backbone_info["backbone"],
        "model": backbone_info["model"],
        "revision": backbone_info["revision"],
        "dtype": backbone_info["dtype"],
        "preprocessing": hashlib.sha256(json.dumps(backbone_info["preprocessing"], sort_keys=True).encode()).hexdigest(),
        "batch_size": batch_size,
        "shard_size": shard_size,
    }


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _manifest_text(name: str, items: Items, info: dict, dims: tuple[int, int], sha256: str,
                   sizes: dict[str, int], paper_dataset: str | None) -> str:
    kind, model = info["backbone"], info["model"]
    desc = f"{kind} {model} ({info['revision']})"
    lines = [
        "# Written by `cmr-bench features extract`; details of the extraction in extraction.json.",
        f"name = {_toml_str(name)}",
        f"title = {_toml_str(f'{name}: {kind} features of {items.root.name}')}",
        f"label_kind = {_toml_str(items.label_kind)}",
        f"num_classes = {len(items.class_names)}",
        f"class_names = [{', '.join(_toml_str(c) for c in items.class_names)}]",
        f"image_dim = {dims[0]}",
        f"text_dim = {dims[1]}",
        f"image_features = {_toml_str(f'{desc} aligned image embeddings, {dims[0]}-d')}",
        f"text_features = {_toml_str(f'{desc} aligned text embeddings, {dims[1]}-d')}",
    ]
    if paper_dataset:
        lines.append(f"paper_dataset = {_toml_str(paper_dataset)}")
    lines += [
        "",
        "[features]",
        f"backbone = {_toml_str(kind)}",
        f"model = {_toml_str(model)}",
        f"revision = {_toml_str(info['revision'])}",
        f"dtype = {_toml_str(info['dtype'])}",
        f"transformers = {_toml_str(info['transformers'])}",
        f"preprocessing = {_toml_str(json.dumps(info['preprocessing'], sort_keys=True))}",
        "",
        "[[files]]",
        f'path = "{FEATURES_FILE}"',
        f'sha256 = "{sha256}"',
        "fetch = false",
        "",
    ]
    for group in ("train", "test"):
        lines += [
            f"[arrays.{group}]",
            f'image = {{ file = "{FEATURES_FILE}", key = "{group}_image" }}',
            f'text = {{ file = "{FEATURES_FILE}", key = "{group}_text" }}',
            f'labels = {{ file = "{FEATURES_FILE}", key = "{group}_labels" }}',
            "",
        ]
    lines += [
        "[split]",
        'kind = "fixed"',
        f"sizes = {{ train = {sizes['train']}, test = {sizes['test']} }}",
        "",
        "[protocols.real]",
        'train = "train"',
        'query = "test"',
        'retrieval = "test"',
        'description = "test queries against the test set (the SDCMR paper\'s protocol)"',
        "",
        "[protocols.hash]",
        'train = "train"',
        'query = "test"',
        'retrieval = "train"',
        'description = "test queries against the training items (the hashing literature\'s protocol)"',
        "",
    ]
    return "\n".join(lines)


def _progress(total: int, initial: int):
    from tqdm import tqdm

    # Quiet off a TTY (logs, CI): the summary line at the end says what was done.
    return tqdm(total=total, initial=initial, unit="pair", desc="extracting", disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def extract(items: Items, out: Path, backbone_loader: Callable[[], object], *, batch_size: int = 32,
            shard_size: int = 1024, workers: int = 4, paper_dataset: str | None = None,
            overwrite: bool = False, log: Callable[[str], None] = lambda s: None) -> Result:
    """`backbone_loader()` returns a loaded Backbone; it is called only after the inputs passed."""
    out = Path(out)
    name = out.name
    if batch_size < 1 or shard_size < 1:
        raise CmrBenchError("--batch-size and --shard-size must be positive")
    from cmr_bench.paths import check_component

    check_component(name, "--out dataset name")  # the folder name is the dataset's name
    check_images_open(items)
    done = _refuse_unless_ours(out, INFO_FILE, "replace") if os.path.lexists(out) else None  # --overwrite deletes only ours
    work = work_dir(out)
    if os.path.lexists(work):
        _refuse_unless_ours(work, JOB_FILE, "resume into")
    if done is not None and not overwrite:
        # Settle what needs no model first: a big model is not loaded only to be told to --overwrite.
        job = done.get("job", {})
        cheap = {"inputs": items.fingerprint(), "batch_size": batch_size, "shard_size": shard_size}
        if any(job.get(k) != v for k, v in cheap.items()):
            raise CmrBenchError(f"{out} already exists from another extraction; pass --overwrite to replace it")
    backbone = backbone_loader()
    key = _job_key(items, backbone.info, batch_size, shard_size)

    if done is not None:
        if done.get("job") == key and not overwrite:
            log(f"{out} is up to date (same inputs, model and settings): nothing to do")
            d = done["dims"]
            return Result(out, name, len(items), d[0], d[1], done["shards"], done["shards"], 0.0, 0.0, up_to_date=True)
        if not overwrite:
            raise CmrBenchError(f"{out} already exists from another extraction; pass --overwrite to replace it")

    from cmr_bench.safe_io import atomic_file, make_folder, write_text

    shard_dir = work / "shards"
    if os.path.lexists(work):
        previous = _refuse_unless_ours(work, JOB_FILE, "resume into")
        if previous != key:
            log(f"discarding {work}: it was started with other inputs, model or settings")
            shutil.rmtree(work)
    make_folder(shard_dir, "extraction work folder", base=out.parent)
    write_text(work / JOB_FILE, json.dumps(key, indent=1), "extraction record")

    n = len(items)
    n_shards = (n + shard_size - 1) // shard_size
    shard_paths = [shard_dir / f"{i:05d}.npz" for i in range(n_shards)]
    done_before = sum(p.is_file() for p in shard_paths)
    if done_before:
        log(f"resuming: {done_before} of {n_shards} shards already done")
    shard_rows = [range(i * shard_size, min(n, (i + 1) * shard_size)) for i in range(n_shards)]
    pending = [(i, range(start, min(rows.stop, start + batch_size)))
               for i, rows in enumerate(shard_rows) if not shard_paths[i].is_file()
               for start in range(rows.start, rows.stop, batch_size)]

    def prepare(batch: range):
        # Decoding and resizing run in worker threads (Pillow releases the GIL), `workers`
        # batches ahead of the model, so the GPU is not left waiting for JPEG decoding.
        return backbone.preprocess_images([load_image(items.root / items.keys[j]) for j in batch])

    image_s = text_s = 0.0
    computed = 0
    loop_start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        window: deque = deque()
        queue = iter(pending)

        def top_up():
            while len(window) < max(1, workers) + 1 and (nxt := next(queue, None)) is not None:
                window.append((nxt, pool.submit(prepare, nxt[1])))

        top_up()
        img_parts, txt_parts = [], []
        with _progress(n, min(n, sum(len(shard_rows[i]) for i, p in enumerate(shard_paths) if p.is_file()))) as bar:
            while window:
                (i, batch), future = window.popleft()
                t0 = time.perf_counter()
                inputs = future.result()
                top_up()
                img_parts.append(backbone.encode_preprocessed(inputs))
                t1 = time.perf_counter()
                txt_parts.append(backbone.encode_texts([items.texts[j] for j in batch]))
                t2 = time.perf_counter()
                image_s += t1 - t0
                text_s += t2 - t1
                computed += len(batch)
                bar.update(len(batch))
                if batch.stop == shard_rows[i].stop:  # the shard is complete: write it atomically
                    img, txt = np.concatenate(img_parts), np.concatenate(txt_parts)
                    img_parts, txt_parts = [], []
                    if not (np.isfinite(img).all() and np.isfinite(txt).all()):
                        raise CmrBenchError(f"the backbone produced NaN/Inf features in shard {i} (try --dtype float32)")
                    with atomic_file(shard_paths[i], "feature shard") as fh:
                        np.savez(fh, image=img.astype(np.float32), text=txt.astype(np.float32))
    except DataError:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)  # the inputs must change: nothing is worth keeping
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    loop_s = time.perf_counter() - loop_start

    image = np.concatenate([np.load(p)["image"] for p in shard_paths])
    text = np.concatenate([np.load(p)["text"] for p in shard_paths])
    arrays = {}
    sizes = {}
    for group in ("train", "test"):
        rows = np.flatnonzero(items.split == group)
        sizes[group] = len(rows)
        arrays[f"{group}_image"] = image[rows]
        arrays[f"{group}_text"] = text[rows]
        arrays[f"{group}_labels"] = items.labels[rows]
    with atomic_file(work / FEATURES_FILE, "features file") as fh:
        np.savez(fh, **arrays)
    rows_text = ["split\trow\timage\n"] + [f"{group}\t{r}\t{items.keys[i]}\n" for group in ("train", "test")
                                           for r, i in enumerate(np.flatnonzero(items.split == group))]
    write_text(work / ITEMS_FILE, "".join(rows_text), "item list")  # odd file names: surrogateescape
    dims = (int(image.shape[1]), int(text.shape[1]))
    info = dict(backbone.info)
    images_per_s = computed / image_s if image_s else 0.0
    texts_per_s = computed / text_s if text_s else 0.0
    pairs_per_s = computed / loop_s if computed and loop_s else 0.0
    record = {**info, "job": key, "dims": dims, "shards": n_shards, "items": n, "sizes": sizes,
              "batch_size": batch_size, "throughput": {"images_per_s": round(images_per_s, 2),
                                                       "texts_per_s": round(texts_per_s, 2),
                                                       "pairs_per_s": round(pairs_per_s, 2),
                                                       "pairs_timed": computed}}
    write_text(work / INFO_FILE, json.dumps(record, indent=1, sort_keys=True), "extraction record")
    write_text(work / "manifest.toml",
               _manifest_text(name, items, info, dims, sha256_file(work / FEATURES_FILE), sizes, paper_dataset), "manifest")
    shutil.rmtree(shard_dir)
    (work / JOB_FILE).unlink()
    from cmr_bench.data.manifest import read_manifest

    read_manifest(work / "manifest.toml")  # the data layer must accept what we wrote
    if os.path.lexists(out):  # --overwrite: the old dataset goes only once the new one is complete, and only if ours
        _refuse_unless_ours(out, INFO_FILE, "replace")
    swap_folder(work, out)
    return Result(out, name, n, dims[0], dims[1], done_before, n_shards, images_per_s, texts_per_s, pairs_per_s)
