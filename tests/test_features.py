"""`cmr-bench features extract` end to end on tiny backbones built here (random weights, a few
small layers, saved with save_pretrained and loaded back through --model PATH), a dozen
generated images and captions: extract -> run -> table --table 5. Offline: no hub access."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# Before the import: huggingface_hub reads these once, when it is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason='needs the extra: pip install "cmr-bench[backbones]"')
pytest.importorskip("PIL", reason='needs the extra: pip install "cmr-bench[backbones]"')

from PIL import Image  # noqa: E402 (after importorskip)

from cmr_bench.features.tiny import build_tiny  # noqa: E402

COLORS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)  # even if imported earlier


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {kind: build_tiny(kind, folder) for kind in ("clip", "siglip", "blip2")}


def make_raw(folder: Path, n: int = 12) -> dict[str, Path]:
    """n images (PNG and JPEG, in a subfolder too, odd sizes) of three colours, captions naming
    the colour, labels = colour, every 4th image in the test split."""
    rng = np.random.default_rng(0)
    images = folder / "images"
    (images / "sub").mkdir(parents=True)
    texts, labels, split = [], [], []
    for i in range(n):
        colour = list(COLORS)[i % 3]
        pixels = np.clip(np.array(COLORS[colour])[None, None, :] + rng.integers(-25, 25, (30 + i, 40, 3)), 0, 255)
        key = f"sub/{i:02d}.jpg" if i % 2 else f"{i:02d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(images / key)
        texts.append(f"{key}\ta photo of a {colour} bird on grass")
        labels.append(f"{key}\t{colour}")
        split.append(f"{key}\t{'test' if i % 4 == 0 else 'train'}")
    paths = {"images": images}
    for name, rows in (("texts", texts), ("labels", labels), ("split", split)):
        paths[name] = folder / f"{name}.tsv"
        paths[name].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


@pytest.fixture
def raw(tmp_path):
    return make_raw(tmp_path / "raw")


def extract_args(raw, model, out, backbone, *extra):
    return ["features", "extract", "--images", raw["images"], "--texts", raw["texts"], "--labels", raw["labels"],
            "--split", raw["split"], "--backbone", backbone, "--model", model, "--out", out, "--device", "cpu",
            "--batch-size", "5", "--shard-size", "8", *extra]


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- end to end ------------------------------------------------------------------------------


def test_blip2_end_to_end_extract_run_table5(tiny_models, raw, tmp_path, run_cli):
    """The Table V path: BLIP-2 features -> backbone-zero-shot run -> Table V beside the paper's rows."""
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli(*extract_args(raw, tiny_models["blip2"], root / "wiki-blip2", "blip2", "--paper-dataset", "wiki"))
    assert code == 0, err
    assert "images/s" in out and "12 pairs" in out
    assert "%|" not in err and "Loading weights" not in err  # no bars off a terminal, no transformers chatter
    assert leftovers(root) == ["wiki-blip2"]  # no work folder left
    ds_dir = root / "wiki-blip2"
    assert sorted(p.name for p in ds_dir.iterdir()) == ["extraction.json", "features.npz", "items.tsv", "manifest.toml"]

    from cmr_bench.data.loader import load_dataset

    ds = load_dataset("wiki-blip2", root=root)
    assert (len(ds.splits["train"]), len(ds.splits["test"])) == (9, 3)
    assert ds.image_dim == ds.text_dim == 16 and ds.num_classes == 3
    info = json.loads((ds_dir / "extraction.json").read_text())
    assert info["backbone"] == "blip2" and info["revision"].startswith("config-sha256:")
    assert info["preprocessing"]["image"]["size"] == {"height": 32, "width": 32}
    assert info["throughput"]["images_per_s"] > 0

    runs = tmp_path / "runs"
    code, out, err = run_cli("--data-root", root, "run", "--methods", "backbone-zero-shot", "--dataset", "wiki-blip2",
                             "--seeds", "0", "--results-dir", runs)
    assert code == 0, err
    code, out, err = run_cli("--data-root", root, "table", "--table", "5", "--dataset", "wiki-blip2",
                             "--results-dir", runs, "--out", tmp_path / "tables", "--format", "csv,md")
    assert code == 0, err
    cells = [c.strip() for c in [line for line in out.splitlines() if line.startswith("| BLIP-2 ")][0].split("|")]
    assert cells[2][:1].isdigit() and "0.804" in cells, cells  # ours (a number, not "not run") beside the paper's
    assert "| BLIP-2 + SDCMR | not run" in out
    assert "beside the paper's rows for 'wiki'" in out

    import pandas as pd

    frame = pd.read_csv(tmp_path / "tables" / "table5.csv")
    ours = frame[frame["method"] == "BLIP-2"].iloc[0]
    assert ours["plugin"] == "backbone-zero-shot" and ours["runs"] == 1
    # Ours is the evaluator's mAP of cosine on the stored embeddings: recompute it independently.
    from cmr_bench.evaluation import evaluate

    test = ds.splits["test"]
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = evaluate(norm(test.image), norm(test.text), test.labels, test.labels, device="cpu")
    assert ours["img2txt_mean"] == pytest.approx(expected["map@all"], abs=1e-4)  # stored to 4 places


@pytest.mark.parametrize("kind", ["clip", "siglip", "blip2"])
def test_features_are_the_models_aligned_embeddings(kind, tiny_models, raw, tmp_path, run_cli):
    """What we store is what the model's own retrieval forward pass compares (up to scale)."""
    import torch

    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli(*extract_args(raw, tiny_models[kind], root / f"t-{kind}", kind))
    assert code == 0, err
    with np.load(root / f"t-{kind}" / "features.npz") as f:
        image, text = f["train_image"], f["train_text"]
    keys = [line.split("\t")[2] for line in (root / f"t-{kind}" / "items.tsv").read_text().splitlines()[1:]
            if line.startswith("train")]
    captions = dict(line.split("\t", 1) for line in raw["texts"].read_text().splitlines())
    pil = [Image.open(raw["images"] / k).convert("RGB") for k in keys]
    tok = transformers.AutoTokenizer.from_pretrained(tiny_models[kind])
    proc = transformers.AutoImageProcessor.from_pretrained(tiny_models[kind])
    pixels = proc(images=pil, return_tensors="pt")["pixel_values"]
    padding = "max_length" if kind == "siglip" else True
    ids = tok([captions[k] for k in keys], padding=padding, max_length=16, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        if kind == "blip2":
            model = transformers.Blip2ForImageTextRetrieval.from_pretrained(tiny_models[kind]).eval()
            out = model(pixel_values=pixels, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
            ref_image = torch.nn.functional.normalize(out.image_embeds.mean(1), dim=-1).numpy()
            ref_text = out.text_embeds.numpy()
        else:
            model = transformers.AutoModel.from_pretrained(tiny_models[kind]).eval()
            extra = {} if kind == "siglip" else {"attention_mask": ids["attention_mask"]}
            out = model(pixel_values=pixels, input_ids=ids["input_ids"], **extra)
            ref_image, ref_text = out.image_embeds.numpy(), out.text_embeds.numpy()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    assert image.shape == ref_image.shape and text.shape == ref_text.shape
    np.testing.assert_allclose(unit(image), unit(ref_image), atol=1e-4)
    np.testing.assert_allclose(unit(text), unit(ref_text), atol=1e-4)


# --- resuming --------------------------------------------------------------------------------


def test_interrupted_extraction_resumes_at_the_first_unfinished_shard(tiny_models, raw, tmp_path):
    from cmr_bench.features.backbones import load_backbone
    from cmr_bench.features.extract import extract, work_dir
    from cmr_bench.features.inputs import read_items

    items = read_items(raw["images"], raw["texts"], raw["labels"], raw["split"])
    out = tmp_path / "data" / "resumed"
    out.parent.mkdir()
    calls = {"n": 0}

    def flaky_loader():
        bb = load_backbone("clip", str(tiny_models["clip"]), "cpu")
        real = bb.encode_preprocessed

        def encode_preprocessed(inputs):
            calls["n"] += 1
            if calls["n"] == 3:  # first shard (batches of 2 in shards of 4) done, second under way
                raise KeyboardInterrupt
            return real(inputs)

        bb.encode_preprocessed = encode_preprocessed
        return bb

    with pytest.raises(KeyboardInterrupt):
        extract(items, out, flaky_loader, batch_size=2, shard_size=4)
    assert not out.exists()
    shards = sorted(p.name for p in (work_dir(out) / "shards").iterdir())
    assert shards == ["00000.npz"]

    logged = []
    result = extract(items, out, lambda: load_backbone("clip", str(tiny_models["clip"]), "cpu"),
                     batch_size=2, shard_size=4, log=logged.append)
    assert result.shards_done_before == 1 and result.shards == 3
    assert any("resuming: 1 of 3" in line for line in logged)
    assert not work_dir(out).exists()

    fresh = tmp_path / "data" / "fresh"
    extract(items, fresh, lambda: load_backbone("clip", str(tiny_models["clip"]), "cpu"), batch_size=2, shard_size=4)
    with np.load(out / "features.npz") as a, np.load(fresh / "features.npz") as b:
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], atol=1e-6)

    # Complete and unchanged: a rerun does nothing; other settings need --overwrite.
    again = extract(items, out, lambda: load_backbone("clip", str(tiny_models["clip"]), "cpu"), batch_size=2, shard_size=4)
    assert again.up_to_date
    from cmr_bench.errors import CmrBenchError

    with pytest.raises(CmrBenchError, match="--overwrite"):
        extract(items, out, lambda: load_backbone("clip", str(tiny_models["clip"]), "cpu"), batch_size=3, shard_size=4)


def test_a_work_folder_from_other_inputs_is_discarded(tiny_models, raw, tmp_path):
    from cmr_bench.features.backbones import load_backbone
    from cmr_bench.features.extract import extract, work_dir
    from cmr_bench.features.inputs import read_items

    out = tmp_path / "d"
    stale = work_dir(out) / "shards"
    stale.mkdir(parents=True)
    np.savez(stale / "00000.npz", image=np.zeros((8, 24)), text=np.zeros((8, 24)))
    (work_dir(out) / "job.json").write_text('{"inputs": "something else"}')
    items = read_items(raw["images"], raw["texts"], raw["labels"], raw["split"])
    logged = []
    result = extract(items, out, lambda: load_backbone("clip", str(tiny_models["clip"]), "cpu"), shard_size=8,
                     log=logged.append)
    assert result.shards_done_before == 0 and any("discarding" in line for line in logged)
    with np.load(out / "features.npz") as f:
        assert np.abs(f["train_image"]).sum() > 0


# --- bad input: one line, exit 2, nothing left behind ---------------------------------------------


def _corrupt(raw):
    (raw["images"] / "00.png").write_bytes(b"this is not a png")


def _truncated(raw):
    path = raw["images"] / "sub" / "11.jpg"  # the last image: found only when decoding, after a shard was written
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 9 // 10])  # header intact, pixel data cut


def _extra_image(raw):
    Image.new("RGB", (20, 20)).save(raw["images"] / "stray.png")


def _missing_caption_row(raw):
    lines = raw["texts"].read_text().splitlines()
    raw["texts"].write_text("\n".join(lines[:-1]) + "\n")


def _missing_label(raw):
    lines = raw["labels"].read_text().splitlines()
    raw["labels"].write_text("\n".join(lines[1:]) + "\n")


def _bad_split(raw):
    raw["split"].write_text(raw["split"].read_text().replace("\ttest", "\tvalidation", 1))


@pytest.mark.parametrize("damage, message", [
    (_corrupt, "unreadable image"),
    (_truncated, "corrupt image"),
    (_extra_image, "12 captions"),
    (_missing_caption_row, "11 captions"),
    (_missing_label, "no label for"),
    (_bad_split, "unknown split 'validation'"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(damage, message, tiny_models, raw, tmp_path, run_cli):
    damage(raw)
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli(*extract_args(raw, tiny_models["clip"], root / "broken", "clip"))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert leftovers(root) == []


def test_unknown_backbone_and_model_errors(tiny_models, raw, tmp_path, run_cli):
    root = tmp_path / "data"
    root.mkdir()
    code, _, err = run_cli(*extract_args(raw, tiny_models["clip"], root / "x", "resnet"))
    assert code == 2 and "invalid choice: 'resnet'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(*extract_args(raw, tiny_models["clip"], root / "x", "blip2"))  # a CLIP folder as BLIP-2
    assert code == 2 and "is a 'clip' model, not a blip2 one" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(*extract_args(raw, tmp_path / "no-such-model", root / "x", "clip"))
    assert code == 2 and "could not load clip model" in err, err
    code, _, err = run_cli(*extract_args(raw, tiny_models["clip"], root / ".hidden", "clip"))
    assert code == 2 and "not a plain name" in err, err
    assert leftovers(root) == []


def test_missing_extra_names_the_pip_command(raw, tmp_path, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    code, _, err = run_cli(*extract_args(raw, "any", tmp_path / "x", "clip"))
    assert code == 2 and 'pip install "cmr-bench[backbones]"' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_multi_label_and_class_order(tiny_models, raw, tmp_path, run_cli):
    lines = raw["labels"].read_text().splitlines()
    lines[0] = lines[0] + ",green"
    raw["labels"].write_text("\n".join(lines) + "\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("red\ngreen\nblue\n")
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli(*extract_args(raw, tiny_models["siglip"], root / "ml", "siglip", "--classes", classes))
    assert code == 0, err
    from cmr_bench.data.loader import load_dataset

    ds = load_dataset("ml", root=root)
    assert ds.label_kind == "multi" and ds.class_names == ["red", "green", "blue"]
    assert ds.splits["test"].labels[0].tolist() == [1, 1, 0]  # image 00 (red, test split) + green


# --- raw releases in their own layout ---------------------------------------------------------


def make_wiki_raw(folder: Path) -> Path:
    """The SVCL wikipedia_dataset/ layout in miniature: 6 train + 3 test pairs, 3 categories,
    XML texts with a bare '&' as in the real files."""
    raw = folder / "wikipedia_dataset"
    cats = ["art", "biology", "geography"]
    (raw / "texts").mkdir(parents=True)
    (raw / "categories.list").write_text("\n".join(cats) + "\n")
    rows = {"train": [], "test": []}
    for i in range(9):
        c = i % 3
        image_id, text_id = f"{i:032x}", f"{i + 100:032x}-{i}"
        (raw / "images" / cats[c]).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24 + i, 20), list(COLORS.values())[c]).save(raw / "images" / cats[c] / f"{image_id}.jpg")
        (raw / "texts" / f"{text_id}.xml").write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<document>\n<date>2009</date>\n<title>T{i}</title>\n'
            f"<text>\nA {list(COLORS)[c]} bird & a cat on grass.\n</text>\n</document>\n")
        rows["test" if i >= 6 else "train"].append(f"{text_id}\t{image_id}\t{c + 1}")
    (raw / "trainset_txt_img_cat.list").write_text("\n".join(rows["train"]) + "\n")
    (raw / "testset_txt_img_cat.list").write_text("\n".join(rows["test"]) + "\n")
    return raw


def test_wiki_raw_layout_in_one_command(tiny_models, tmp_path, run_cli):
    raw = make_wiki_raw(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli("features", "extract", "--layout", "wiki", "--raw", raw, "--backbone", "clip",
                             "--model", tiny_models["clip"], "--out", root / "wiki-clip", "--device", "cpu")
    assert code == 0, err
    from cmr_bench.data.loader import load_dataset
    from cmr_bench.features.layouts import wiki_items

    ds = load_dataset("wiki-clip", root=root)
    assert ds.class_names == ["art", "biology", "geography"]
    assert ds.splits["train"].labels.tolist() == [0, 1, 2, 0, 1, 2] and len(ds.splits["test"]) == 3
    assert 'paper_dataset = "wiki"' in (root / "wiki-clip" / "manifest.toml").read_text()
    assert wiki_items(raw).texts[0] == "A red bird & a cat on grass."
    # Bad combinations are one line, exit 2.
    code, _, err = run_cli("features", "extract", "--layout", "wiki", "--raw", raw, "--images", raw, "--backbone", "clip",
                           "--model", tiny_models["clip"], "--out", root / "x")
    assert code == 2 and "drop --images" in err
    (raw / "testset_txt_img_cat.list").write_text("nope\n")
    code, _, err = run_cli("features", "extract", "--layout", "wiki", "--raw", raw, "--backbone", "clip",
                           "--model", tiny_models["clip"], "--out", root / "x")
    assert code == 2 and "expected text_id<TAB>image_id<TAB>class" in err
    assert not (root / "x").exists()


def test_pascal_raw_layout(tiny_models, tmp_path, run_cli):
    """dataset/<category>/*.jpg + sentence/<category>/*.txt; per category the last 5 test, the 5
    before them left out, the rest train."""
    raw = tmp_path / "pascal-sentences"
    for c, cat in enumerate(["aeroplane", "bicycle"]):
        (raw / "dataset" / cat).mkdir(parents=True)
        (raw / "sentence" / cat).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (16, 16), list(COLORS.values())[c]).save(raw / "dataset" / cat / f"2008_{i:06d}.jpg")
            (raw / "sentence" / cat / f"2008_{i:06d}.txt").write_text("".join(f" A {cat} photo {k}.\n" for k in range(5)))
    from cmr_bench.features.layouts import pascal_items

    items = pascal_items(raw)
    assert items.class_names == ["aeroplane", "bicycle"]
    assert list(items.split).count("train") == 4 and list(items.split).count("test") == 10
    assert items.keys[:3] == ["aeroplane/2008_000000.jpg", "aeroplane/2008_000001.jpg", "aeroplane/2008_000007.jpg"]
    assert items.texts[0] == "A aeroplane photo 0. A aeroplane photo 1. A aeroplane photo 2. A aeroplane photo 3. A aeroplane photo 4."
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli("features", "extract", "--layout", "pascal", "--raw", raw, "--backbone", "siglip",
                             "--model", tiny_models["siglip"], "--out", root / "pascal-siglip", "--device", "cpu")
    assert code == 0, err
    assert 'paper_dataset = "pascal"' in (root / "pascal-siglip" / "manifest.toml").read_text()


@pytest.mark.parametrize("kind", ["clip", "blip2"])
def test_half_precision_path_runs_on_the_cpu(kind, tiny_models, raw, tmp_path, run_cli):
    """The GPU's dtype path (bf16 weights and inputs, fp32 features out), exercised on the CPU."""
    root = tmp_path / "data"
    root.mkdir()
    for name, dtype in (("full", "float32"), ("half", "bfloat16")):
        code, out, err = run_cli(*extract_args(raw, tiny_models[kind], root / name, kind, "--dtype", dtype))
        assert code == 0, err
    info = json.loads((root / "half" / "extraction.json").read_text())
    assert info["dtype"] == "bfloat16"
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    with np.load(root / "full" / "features.npz") as a, np.load(root / "half" / "features.npz") as b:
        for key in ("train_image", "train_text", "test_image", "test_text"):
            assert b[key].dtype == np.float32
            assert (unit(a[key]) * unit(b[key])).sum(1).min() > 0.99  # same embeddings, bf16 rounding


def test_hub_id_from_the_offline_cache_records_the_commit(tiny_models, raw, tmp_path, run_cli, monkeypatch):
    """--model ORG/NAME goes through the hub code path; offline it is served from the local cache
    (laid out here as huggingface_hub lays it out) and the manifest records the snapshot's commit."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-clip" / "snapshots" / commit
    shutil.copytree(tiny_models["clip"], snapshot)
    (cache / "models--tiny-org--tiny-clip" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-clip" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache), raising=False)
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = run_cli(*extract_args(raw, "tiny-org/tiny-clip", root / "hub-clip", "clip"))
    assert code == 0, err
    manifest = (root / "hub-clip" / "manifest.toml").read_text()
    assert f'revision = "{commit}"' in manifest and 'model = "tiny-org/tiny-clip"' in manifest
    code, _, err = run_cli(*extract_args(raw, "tiny-org/not-cached", root / "x", "clip"))
    assert code == 2 and "could not load clip model 'tiny-org/not-cached'" in err and len(err.strip().splitlines()) == 1
