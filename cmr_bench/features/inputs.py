"""The extractor's inputs: a folder of images and three tab-separated files keyed by the
image's path relative to that folder (texts, labels, split). Everything is checked before a
model is loaded, so bad input costs no GPU time and leaves nothing behind."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_bench.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")


@dataclass
class Items:
    """One row per image/text pair, in the order of the texts file."""

    root: Path
    keys: list[str]  # image paths relative to `root`, with forward slashes
    texts: list[str]
    labels: np.ndarray  # int64 (n,) or multi-hot (n, c)
    class_names: list[str]
    label_kind: str  # "single" or "multi"
    split: np.ndarray  # str array of "train"/"test"

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> str:
        """Identifies the inputs (paths, file sizes and mtimes, captions): a rerun with other
        inputs never reuses shards of an earlier one."""
        h = hashlib.sha256()
        for key, text in zip(self.keys, self.texts):
            st = (self.root / key).stat()
            h.update(f"{key}\t{st.st_size}\t{st.st_mtime_ns}\t{text}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def _read_tsv(path: Path, what: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) rows; blank lines are skipped, a row without a tab is an error."""
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM from a Windows editor is not part of the first path
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{n}: expected '<image path><TAB><{what}>', found no tab")
        key, value = line.split("\t", 1)
        key = key.strip().replace("\\", "/")
        if not key:
            raise DataError(f"{path}:{n}: empty image path")
        rows.append((n, key, value.strip()))
    if not rows:
        raise DataError(f"{what} file {path} is empty")
    return rows


def _keyed(path: Path, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, key, value in _read_tsv(path, what):
        if key in out:
            raise DataError(f"{path}:{n}: '{key}' is listed twice")
        out[key] = value
    return out


def list_images(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _check_key(images: Path, key: str, where: str) -> None:
    """A caption's image path: relative, inside --images (no '..', no absolute path, no symlink
    leading out of it), and not itself a symlink; else one line naming the row."""
    from pathlib import PurePosixPath

    from cmr_bench.paths import is_within

    parts = PurePosixPath(key).parts
    if key.startswith("/") or ".." in parts or (len(key) > 1 and key[1] == ":") or "\x00" in key:
        raise DataError(f"{where}: image path '{key}' must be relative to --images and stay inside it")
    path = images / key
    if path.is_symlink() or not is_within(path, images):
        raise DataError(f"{where}: image '{key}' is a symbolic link or leads outside --images; copy the file in instead")


def _class_order(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)  # "2" before "10"
    return sorted(names)


def read_items(images: Path, texts: Path, labels: Path, split: Path, classes: Path | None = None,
               allow_extra_images: bool = False) -> Items:
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"--images: not a folder: {images}")
    rows = _read_tsv(Path(texts), "caption")
    keys, captions, seen = [], [], set()
    for n, key, caption in rows:
        if key in seen:
            raise DataError(f"{texts}:{n}: '{key}' has a second caption (join an image's captions into one line)")
        if not caption:
            raise DataError(f"{texts}:{n}: empty caption for '{key}'")
        seen.add(key)
        keys.append(key)
        captions.append(caption)
    for n, key, _ in rows:
        _check_key(images, key, f"{texts}:{n}")
    present = list_images(images)
    missing = [k for k in keys if not (images / k).is_file()]
    extra = sorted(set(present) - seen)
    if missing or (extra and not allow_extra_images):
        detail = f"no image for '{missing[0]}'" if missing else f"no caption for '{extra[0]}'"
        raise DataError(f"{len(keys)} captions in {texts} for {len(present)} images in {images}: {detail}")

    label_of = _keyed(Path(labels), "label")
    split_of = _keyed(Path(split), "split")
    for what, table, path in (("label", label_of, labels), ("split", split_of, split)):
        lacking = [k for k in keys if k not in table]
        if lacking:
            raise DataError(f"{path}: no {what} for '{lacking[0]}' ({len(lacking)} of {len(keys)} images lack one)")
    split_arr = np.array([split_of[k].lower() for k in keys])
    bad = sorted(set(split_arr) - set(SPLITS))
    if bad:
        raise DataError(f"{split}: unknown split '{bad[0]}' (use {' or '.join(SPLITS)})")
    for s in SPLITS:
        if not (split_arr == s).any():
            raise DataError(f"{split}: no image is in the '{s}' split")

    per_item = [[p.strip() for p in label_of[k].split(",") if p.strip()] for k in keys]
    if any(not p for p in per_item):
        raise DataError(f"{labels}: empty label for '{keys[[not p for p in per_item].index(True)]}'")
    multi = any(len(p) > 1 for p in per_item)
    if classes is not None:
        try:
            class_names = [c.strip() for c in Path(classes).read_text(encoding="utf-8").splitlines() if c.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"--classes {classes}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
        if len(set(class_names)) != len(class_names):
            raise DataError(f"--classes {classes}: a class is listed twice")
    else:
        class_names = _class_order({c for p in per_item for c in p})
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({c for p in per_item for c in p} - set(index))
    if unknown:
        raise DataError(f"{labels}: label '{unknown[0]}' is not in --classes {classes}")
    if multi:
        label_arr = np.zeros((len(keys), len(class_names)), dtype=np.int64)
        for i, p in enumerate(per_item):
            label_arr[i, [index[c] for c in p]] = 1
    else:
        label_arr = np.array([index[p[0]] for p in per_item], dtype=np.int64)
    return Items(images, keys, captions, label_arr, class_names, "multi" if multi else "single", split_arr)


def check_images_open(items: Items) -> None:
    """Open every image's header (cheap: no pixel decoding) so that an unreadable file is
    reported before the model loads. Truncated pixel data is caught later, when decoding."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    for key in items.keys:
        path = items.root / key
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # a header claiming 60000x60000
                with Image.open(path) as im:
                    im.size  # noqa: B018 - parsed header
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            raise DataError(f"unreadable image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_image(path: Path):
    """Decode to RGB; any decoding problem is one DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
        raise DataError(f"corrupt image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
