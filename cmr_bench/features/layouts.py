"""Readers for raw releases whose layout is known, so one command extracts them:
`cmr-bench features extract --layout wiki --raw wikipedia_dataset/ ...`.

wiki (Rasiwasia et al. 2010, the SVCL release `wikipedia_dataset/`):
    categories.list               class names, class k on line k
    trainset_txt_img_cat.list     text_id<TAB>image_id<TAB>class (1..10), 2,173 rows
    testset_txt_img_cat.list      the same, 693 rows
    images/<category>/<image_id>.jpg
    texts/<text_id>.xml           <document>...<text>article text</text></document>
Rows keep the lists' order (train then test): the order of the features in raw_features.mat.

pascal (Rashtchian et al. 2010, as the usual downloaders save the UIUC page):
    dataset/<category>/<image>.jpg      1,000 images, 20 categories x 50 (or images/)
    sentence/<category>/<image>.txt     its 5 sentences, one a line (or sentences/)
The image's 5 sentences are joined into one text. Split (ours: DSCMR never published which image
went where): per category, by file name, the last 5 are test, the 5 before them (DSCMR's
validation) are left out, the rest (40) train: 800 / 100 like the `pascal` dataset."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from cmr_bench.errors import DataError
from cmr_bench.features.inputs import IMAGE_SUFFIXES, Items

LAYOUTS = ("wiki", "pascal")


def _wiki_text(path: Path) -> str:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    # The XML files are not all well-formed (bare '&'): take the <text> element by pattern.
    match = re.search(r"<text>(.*?)</text>", raw, flags=re.DOTALL | re.IGNORECASE)
    body = match.group(1) if match else re.sub(r"<[^>]+>", " ", raw)
    return " ".join(html.unescape(body).split())


def wiki_items(raw: Path) -> Items:
    raw = Path(raw)
    need = ["categories.list", "trainset_txt_img_cat.list", "testset_txt_img_cat.list", "images", "texts"]
    missing = [n for n in need if not (raw / n).exists()]
    if missing:
        raise DataError(f"--layout wiki: {raw} lacks {', '.join(missing)} (expected the SVCL wikipedia_dataset/ folder)")
    classes = [c.strip() for c in (raw / "categories.list").read_text(encoding="utf-8").splitlines() if c.strip()]
    images = {p.stem: p.relative_to(raw / "images").as_posix()
              for p in (raw / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    keys, texts, labels, split = [], [], [], []
    for group, name in (("train", "trainset_txt_img_cat.list"), ("test", "testset_txt_img_cat.list")):
        for n, line in enumerate((raw / name).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or not parts[2].strip().isdigit():
                raise DataError(f"{raw / name}:{n}: expected text_id<TAB>image_id<TAB>class")
            text_id, image_id, cls = parts[0].strip(), parts[1].strip(), int(parts[2])
            if not 1 <= cls <= len(classes):
                raise DataError(f"{raw / name}:{n}: class {cls} outside 1..{len(classes)}")
            if image_id not in images:
                raise DataError(f"{raw / name}:{n}: no image {image_id}.jpg under {raw / 'images'}")
            text_file = raw / "texts" / f"{text_id}.xml"
            if not text_file.is_file():
                raise DataError(f"{raw / name}:{n}: no text {text_file}")
            text = _wiki_text(text_file)
            if not text:
                raise DataError(f"{text_file}: empty text")
            keys.append(images[image_id])
            texts.append(text)
            labels.append(cls - 1)
            split.append(group)
    return Items(raw / "images", keys, texts, np.array(labels, dtype=np.int64), classes, "single", np.array(split))


def _first_dir(raw: Path, names: tuple[str, ...], layout: str) -> Path:
    for name in names:
        if (raw / name).is_dir():
            return raw / name
    raise DataError(f"--layout {layout}: {raw} has no folder {' or '.join(names)}")


def pascal_items(raw: Path, test_per_class: int = 5, val_per_class: int = 5) -> Items:
    raw = Path(raw)
    image_dir = _first_dir(raw, ("dataset", "images"), "pascal")
    sentence_dir = _first_dir(raw, ("sentence", "sentences"), "pascal")
    classes = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"--layout pascal: no category folders in {image_dir}")
    keys, texts, labels, split = [], [], [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (image_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) <= test_per_class + val_per_class:
            raise DataError(f"--layout pascal: {image_dir / name} has {len(files)} images, "
                            f"too few for {test_per_class} test + {val_per_class} validation")
        groups = ["train"] * (len(files) - test_per_class - val_per_class) + [""] * val_per_class + ["test"] * test_per_class
        for path, group in zip(files, groups):
            if not group:
                continue
            text_file = sentence_dir / name / f"{path.stem}.txt"
            if not text_file.is_file():
                raise DataError(f"--layout pascal: no sentences {text_file} for image {path}")
            text = " ".join(line.strip() for line in text_file.read_text(encoding="utf-8", errors="replace").splitlines()
                            if line.strip())
            if not text:
                raise DataError(f"{text_file}: no sentences")
            keys.append(path.relative_to(image_dir).as_posix())
            texts.append(text)
            labels.append(c)
            split.append(group)
    return Items(image_dir, keys, texts, np.array(labels, dtype=np.int64), classes, "single", np.array(split))


def layout_items(layout: str, raw: Path) -> Items:
    if layout == "wiki":
        return wiki_items(raw)
    if layout == "pascal":
        return pascal_items(raw)
    raise DataError(f"unknown --layout '{layout}' (known: {', '.join(LAYOUTS)})")
