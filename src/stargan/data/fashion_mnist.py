"""Fashion-MNIST (Xiao et al., 2017) as a domain-folder dataset: real images that need no download.

Debian ships the idx files (``apt-get install dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist/``); any folder holding the four standard files works, gzipped
or not. Each chosen class becomes a domain; the 28x28 grey images are padded to 32x32 and written
as RGB PNGs: ``OUT/train/<class>/NNNNN.png`` from the training set, ``OUT/val/<class>/`` from the
test set.
"""
from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stargan.data import generated
from stargan.data.folders import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle_boot")
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SIZE, PAD = 28, 2  # 28 + 2 * 2 = 32, a power of two as the networks want
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned byte data, 3-d images / 1-d labels
WRITING = ".writing"  # present while the folder is being written (or if interrupted)


def _find(source: Path, name: str) -> Path:
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{source} has no {name}.gz (or {name}): expected the four Fashion-MNIST idx files "
                    f"there. On Debian/Ubuntu: apt-get install dataset-fashion-mnist (puts them in "
                    f"{DEBIAN_DIR}); or pass --source DIR with the files")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (gzipped or not) of unsigned bytes with ``ndim`` dimensions, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path} is not a {ndim}-d idx file of unsigned bytes (magic {magic!r}, expected "
                        f"{_IDX_MAGIC[ndim]:#010x})")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its {4 + 4 * ndim}-byte header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape} ({int(np.prod(shape))} values) but it "
                        f"holds {data.size}")
    return data.reshape(shape)


def parse_classes(names: str | Sequence[str]) -> list[int]:
    """Class indices of comma-separated (or listed) names such as ``sandal,sneaker,ankle_boot``."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLASSES]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"--classes needs at least two different Fashion-MNIST classes, got {list(names)}"
                        f"{f' (unknown: {unknown})' if unknown else ''}; valid names: {', '.join(CLASSES)}")
    return [CLASSES.index(n) for n in names]


def make_fashion_mnist(out: str | Path, classes: str | Sequence[str] = ("sandal", "sneaker", "ankle_boot"),
                       source: str | Path = DEBIAN_DIR, max_per_class: int = 0,
                       progress: bool = True) -> Path:
    """Write ``out/{train,val}/<class>/*.png`` (32x32 RGB); reuse ``out`` if it holds the same settings.

    ``max_per_class`` > 0 keeps only the first that many images of each class per split.
    """
    indices = parse_classes(classes)
    source, out = Path(source), Path(out)
    settings = {"classes": [CLASSES[i] for i in indices], "max_per_class": max_per_class, "pad": PAD}
    if generated.holds(out, settings):
        return out  # already written: the source is not needed
    if not source.is_dir():
        raise DataError(f"Fashion-MNIST folder {source} does not exist. On Debian/Ubuntu: apt-get install "
                        f"dataset-fashion-mnist (puts the idx files in {DEBIAN_DIR}); or pass --source DIR")
    generated.refuse_foreign(out, SPLIT_FILES, WRITING, f"{out} already has train/ or val/ but was not "
                             "written by this command; pass a new or empty folder with --out")
    splits = {split: (read_idx(_find(source, images), 3), read_idx(_find(source, labels), 1))
              for split, (images, labels) in SPLIT_FILES.items()}
    for split, (images, labels) in splits.items():  # all checks before anything is written
        if images.shape[1:] != (SIZE, SIZE):
            raise DataError(f"{source}: the {split} images are {images.shape[1]}x{images.shape[2]}, "
                            f"Fashion-MNIST's are {SIZE}x{SIZE}")
        if len(images) != len(labels):
            raise DataError(f"{source}: {split} has {len(images)} images but {len(labels)} labels")
        absent = [CLASSES[i] for i in indices if not (labels == i).any()]
        if absent:
            raise DataError(f"{source}: the {split} labels have no {', '.join(absent)}; are these the "
                            "Fashion-MNIST files?")
    with generated.writing(out, settings, WRITING):
        for split, (images, labels) in splits.items():
            shutil.rmtree(out / split, ignore_errors=True)
            for index in indices:
                folder = out / split / CLASSES[index]
                folder.mkdir(parents=True)
                chosen = np.flatnonzero(labels == index)
                if max_per_class > 0:
                    chosen = chosen[:max_per_class]
                for k, i in enumerate(tqdm(chosen, desc=f"{split}/{CLASSES[index]}", unit="img",
                                           disable=not progress, leave=False)):
                    grey = np.pad(images[i], PAD)
                    Image.fromarray(grey).convert("RGB").save(folder / f"{k:05d}.png")
    return out
