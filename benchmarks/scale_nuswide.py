"""Issue 15, target 4: every method at NUS-WIDE scale on synthetic data, one subprocess each.

    python benchmarks/scale_nuswide.py make --data /tmp/scale          # ~5 GB of .npy, once
    python benchmarks/scale_nuswide.py all --data /tmp/scale --jobs 2 --out scale.json
    python benchmarks/scale_nuswide.py one --data /tmp/scale --kind hash --method djsrh   # one row

Two sets, shaped as the issue gives them (features are float32, memory-mapped from disk):
  hash: NUS-WIDE-TC21: 2,100 queries, 193,734 database items, 10,500 training items taken from the
        database, 4096-d image / 1,000-d text, 21 multi-hot labels; binary methods at 64 bits,
        Hamming ranking of the queries against the whole database.
  real: NUS-WIDE-10k-sized: 42,941 training, 28,661 test pairs, 4096-d / 300-d, 10 classes; each
        real-valued method, cosine ranking test against test.
Each method runs its default config except the training length: one epoch (epoch schedules; one
epoch of each stage for staged ones such as CMDN's stage1_epochs), or
at most one epoch's worth of iterations; the fit time per epoch is scaled from it. A closed-form
method fits once. Measured per method: fit seconds (and per epoch), encode + evaluate seconds,
peak RSS of the process and its growth over the data it starts with. A watchdog stops a method
whose RSS passes --max-rss-gb (the memory budget): that row says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from cmr_bench.data.synthetic import _labels

SETS = {
    "hash": {"n_train": 10_500, "n_query": 2_100, "n_database": 193_734, "image_dim": 4096, "text_dim": 1000,
             "classes": 21, "multilabel": True},
    "real": {"n_train": 42_941, "n_test": 28_661, "image_dim": 4096, "text_dim": 300, "classes": 10, "multilabel": False},
}
# SCALE_DIVISOR=100 shrinks every count (a smoke test of this script, not a measurement)
_DIV = int(os.environ.get("SCALE_DIVISOR", "1"))
SETS = {kind: {k: (max(v // _DIV, 8) if k.startswith("n_") else v) for k, v in s.items()} for kind, s in SETS.items()}
CHUNK = 16_384


def _features(rng, member, prototypes, view_image, view_text, out_image, out_text, start):
    latent = (member @ prototypes) / member.sum(1, keepdims=True) + rng.standard_normal((len(member), prototypes.shape[1]))
    out_image[start:start + len(member)] = np.tanh(latent @ view_image) + 0.5 * rng.standard_normal((len(member), view_image.shape[1]), dtype=np.float32)
    out_text[start:start + len(member)] = latent @ view_text + 0.5 * rng.standard_normal((len(member), view_text.shape[1]), dtype=np.float32)


def make(data: Path, seed: int = 0) -> None:
    """Class prototypes seen through two random views plus noise (as cmr_bench.data.synthetic),
    written in chunks so no float64 copy of a whole set is ever held."""
    for kind, s in SETS.items():
        folder = data / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        n = s["n_query"] + s["n_database"] if kind == "hash" else s["n_train"] + s["n_test"]
        c, latent_dim = s["classes"], max(4, s["classes"])
        labels = _labels(rng, n, c, s["multilabel"])  # the suite's synthetic label draw
        labels = labels if s["multilabel"] else np.eye(c, dtype=np.int64)[labels]  # member rows for the features
        prototypes = (rng.standard_normal((c, latent_dim)) * 2.0).astype(np.float32)
        view_image = (rng.standard_normal((latent_dim, s["image_dim"])) / math.sqrt(latent_dim)).astype(np.float32)
        view_text = (rng.standard_normal((latent_dim, s["text_dim"])) / math.sqrt(latent_dim)).astype(np.float32)
        image = np.lib.format.open_memmap(folder / "image.npy", "w+", np.float32, (n, s["image_dim"]))
        text = np.lib.format.open_memmap(folder / "text.npy", "w+", np.float32, (n, s["text_dim"]))
        for start in range(0, n, CHUNK):
            _features(rng, labels[start:start + CHUNK].astype(np.float32), prototypes, view_image, view_text, image, text, start)
        image.flush()
        text.flush()
        del image, text
        np.save(folder / "labels.npy", labels if s["multilabel"] else labels.argmax(1))
        print(f"{kind}: {n} pairs in {folder}", flush=True)


def load(data: Path, kind: str):
    from cmr_bench.data.types import Dataset, Protocol, Split

    s = SETS[kind]
    folder = data / kind
    image = np.load(folder / "image.npy", mmap_mode="r")
    text = np.load(folder / "text.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    rows = np.arange(len(labels))

    def split(name, lo, hi):
        return Split(name, image[lo:hi], text[lo:hi], labels[lo:hi], rows[lo:hi])

    if kind == "hash":
        q = s["n_query"]
        splits = {"query": split("query", 0, q), "database": split("database", q, len(labels)),
                  "train": split("train", q, q + s["n_train"])}
        protocol = Protocol("hash", "train", "query", "database")
    else:
        t = s["n_train"]
        splits = {"train": split("train", 0, t), "test": split("test", t, len(labels))}
        protocol = Protocol("real", "train", "test", "test")
    return Dataset("nuswide-scale-" + kind, splits, {protocol.name: protocol}, s["classes"],
                   "multi" if s["multilabel"] else "single"), protocol


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _watchdog(limit_gb: float) -> None:
    def watch():
        while True:
            if _current_rss_gb() > limit_gb:
                print(json.dumps({"error": f"RSS passed the {limit_gb:g} GB budget"}), flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()


def one(data: Path, kind: str, method: str, bits: int, max_rss_gb: float, threads: int) -> dict:
    import torch

    from cmr_bench.evaluation import evaluate
    from cmr_bench.registry import get_method

    import warnings

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # memory-mapped inputs, never written
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # torch's lazy imports (seconds): not the method's time
    _watchdog(max_rss_gb)
    dataset, protocol = load(data, kind)
    train, query, retrieval = (dataset.splits[protocol.train], dataset.splits[protocol.query], dataset.splits[protocol.retrieval])
    cls = get_method(method)
    config = cls.resolve_config({}, dataset=dataset.name)
    schedule = getattr(cls, "schedule", None)
    overrides, epochs_run = {}, None
    if schedule == "epochs" and schedule in config:
        # a staged schedule (CMDN's stage1_epochs, MCSM's pretrain_epochs) runs one epoch of each stage
        stages = [k for k, v in config.items() if k.endswith("_epochs") and isinstance(v, int) and v > 0]
        overrides = {k: 1 for k in stages}
        overrides[schedule], epochs_run = 1 + len(stages), 1.0 + len(stages)
    elif schedule == "iterations" and schedule in config:
        per_epoch = math.ceil(len(train) / int(config.get("batch_size", 64)))
        overrides[schedule] = min(int(config[schedule]), per_epoch)
        epochs_run = overrides[schedule] / per_epoch
    config = cls.resolve_config(overrides, dataset=dataset.name)
    base = rss_gb()
    m = cls.create(image_dim=dataset.splits["train"].image.shape[1], text_dim=dataset.splits["train"].text.shape[1],
                   num_classes=dataset.num_classes, label_kind=dataset.label_kind, config=config,
                   bits=bits if cls.code_type == "binary" else None, device="cpu", seed=0)
    t0 = time.perf_counter()
    m.fit(train, None)
    fit_s = time.perf_counter() - t0
    fit_rss = rss_gb()
    t0 = time.perf_counter()
    codes = {(role, mod): np.asarray(m.encode(np.asarray(split.features(mod)), mod))
             for role, split in (("query", query), ("retrieval", retrieval)) for mod in ("image", "text")}
    encode_s = time.perf_counter() - t0
    similarity = "hamming" if cls.code_type == "binary" else "cosine"
    t0 = time.perf_counter()
    maps = [evaluate(codes["query", q], codes["retrieval", r], query.labels, retrieval.labels, similarity=similarity,
                     ks=(50,), device="cpu")["map@all"] for q, r in (("image", "text"), ("text", "image"))]
    eval_s = time.perf_counter() - t0
    return {"method": method, "kind": kind, "code_type": cls.code_type, "schedule": schedule, "overrides": overrides,
            "default_length": None if schedule is None else cls.resolve_config({}, dataset=dataset.name).get(schedule),
            "fit_s": round(fit_s, 2), "fit_s_per_epoch": None if epochs_run is None else round(fit_s / epochs_run, 2),
            "encode_s": round(encode_s, 2), "evaluate_s": round(eval_s, 2), "map_i2t": round(float(maps[0]), 4),
            "map_t2i": round(float(maps[1]), 4), "rss_start_gb": round(base, 2), "rss_after_fit_gb": round(fit_rss, 2),
            "rss_peak_gb": round(rss_gb(), 2), "threads": threads}


def run_all(data: Path, jobs: int, timeout: int, max_rss_gb: float, out: Path, only: list[str] | None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cmr_bench import registry

    todo = []
    for name, cls in sorted(registry.all_methods().items()):
        if only and name not in only:
            continue
        if name in ("backbone-zero-shot",):  # needs raw images/text through a pretrained backbone
            continue
        todo.append(("hash" if cls.code_type == "binary" else "real", name))
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if "error" not in r]  # a failed row is measured again
    done = {(r["kind"], r["method"]) for r in rows}
    lock = threading.Lock()

    def work(item):
        kind, name = item
        cmd = [sys.executable, __file__, "one", "--data", str(data), "--kind", kind, "--method", name,
               "--max-rss-gb", str(max_rss_gb), "--threads", "1"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        except subprocess.TimeoutExpired:
            row = {"error": f"did not finish within {timeout} s"}
        row.setdefault("method", name)
        row.setdefault("kind", kind)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        with lock:
            rows.append(row)
            out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(work, [t for t in todo if t not in done]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("make")
    a.add_argument("--data", type=Path, required=True)
    for name in ("one", "all"):
        a = sub.add_parser(name)
        a.add_argument("--data", type=Path, required=True)
        a.add_argument("--max-rss-gb", type=float, default=12.0)
        if name == "one":
            a.add_argument("--kind", choices=sorted(SETS), required=True)
            a.add_argument("--method", required=True)
            a.add_argument("--bits", type=int, default=64)
            a.add_argument("--threads", type=int, default=1)
        else:
            a.add_argument("--jobs", type=int, default=1)
            a.add_argument("--timeout", type=int, default=1200)
            a.add_argument("--out", type=Path, required=True)
            a.add_argument("--only", default=None, help="comma list of methods")
    args = p.parse_args(argv)
    if args.cmd == "make":
        make(args.data)
    elif args.cmd == "one":
        print(json.dumps(one(args.data, args.kind, args.method, args.bits, args.max_rss_gb, args.threads)), flush=True)
    else:
        run_all(args.data, args.jobs, args.timeout, args.max_rss_gb, args.out, args.only.split(",") if args.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
