"""Image folders: one sub-folder per domain, scanned, checked and decoded to RGB.

Layout::

    ROOT/train/<domain>/**/*.jpg
    ROOT/val/<domain>/**/*.jpg
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LAYOUT_HINT = "expected one folder per domain: ROOT/train/<domain>/*.jpg and ROOT/val/<domain>/*.jpg"
MAX_LISTED = 20

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_16BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ORIENTATION = 0x0112  # EXIF tag


class DataError(ValueError):
    """A problem with the user's dataset; the message says which file or folder and what to do."""


@dataclass(frozen=True)
class ImageFolder:
    """The images of one split; ``labels[i]`` is the index in ``domains`` of ``files[i]``."""

    root: Path
    domains: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.files) != len(self.labels):
            raise ValueError(f"ImageFolder({self.root}): {len(self.files)} files but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.files)

    def indices_of(self, label: int) -> list[int]:
        return [i for i, y in enumerate(self.labels) if y == label]

    def files_of(self, label: int) -> list[Path]:
        return [self.files[i] for i in self.indices_of(label)]


def _is_visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted, hidden files and folders skipped)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and _is_visible(p, folder) and p.is_file())


def scan_split(root: str | Path, domains: Sequence[str] | None = None) -> ImageFolder:
    """List the images under ``root/<domain>/`` (recursively, sorted).

    Labels follow the sorted folder names, or the order of ``domains`` when it is given (the set of
    folders must then be exactly ``domains``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder; {LAYOUT_HINT}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{root} has no domain sub-folders; {LAYOUT_HINT}")
    if domains is not None:
        missing = sorted(set(domains) - set(found))
        extra = sorted(set(found) - set(domains))
        if missing or extra:
            raise DataError(f"{root} does not have the expected domain folders {list(domains)}: "
                            f"missing {missing}, unexpected {extra}; add or remove folders so they match")
        found = list(domains)

    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(found):
        images = list_images(root / name)
        if not images:
            others = sorted(p.name for p in (root / name).rglob("*") if p.is_file())
            seen = f" (it holds {len(others)} other files, e.g. {others[0]})" if others else ""
            raise DataError(f"domain folder {root / name} has no images{seen}; accepted extensions "
                            f"(any case): {', '.join(IMAGE_EXTENSIONS)}. Add images or remove the folder")
        files += images
        labels += [label] * len(images)
    return ImageFolder(root=root, domains=tuple(found), files=tuple(files), labels=tuple(labels))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in _16BIT_MODES:
        # 16-bit grey (mode "I" is read as 16-bit too): scale 0..65535 to 0..255 rather than clip.
        values = np.clip(np.asarray(im).astype(np.float64), 0, 65535)
        return Image.fromarray(np.round(values / 257).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        # Floats are taken as 0..1 when no value exceeds 1, else as 0..255.
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if values.max(initial=0.0) <= 1.0:
            values = values * 255
        return Image.fromarray(np.round(np.clip(values, 0, 255)).astype(np.uint8)).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        # Transparent pixels become black (alpha composited over a black background).
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message only repeats the path
        return "not a readable image (unknown format or corrupt header)"
    return f"{type(error).__name__}: {error}"


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        opened.load()
        im = opened
        try:
            if im.getexif().get(_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
        except Exception:  # a malformed EXIF block is not worth rejecting the image for
            pass
        rgb = _to_rgb(im)
        # Pillow documents that closing may free the pixels of `opened`: return an independent image.
        return rgb.copy() if rgb is opened else rgb


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image and close the file.

    Any Pillow mode is accepted: alpha is composited over black, 16-bit grey is scaled to 8 bits,
    EXIF orientation is applied.
    """
    path = Path(path)
    try:
        return _decode(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path}: {_reason(error)}") from error


def _check(path: Path) -> str | None:
    try:
        _decode(path)
    except Exception as error:  # any failure to decode makes the image unusable
        return _reason(error)
    return None


def find_bad_images(folder: ImageFolder, workers: int = 4) -> list[tuple[Path, str]]:
    """Decode every image of ``folder``; return ``(path, reason)`` for those that fail."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other code), so "
                      "truncated images cannot be detected", stacklevel=2)
    bad = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(folder.files), desc="checking images", unit="img",
                 disable=len(folder.files) < 200) as progress:
        for path, reason in zip(folder.files, pool.map(_check, folder.files)):
            progress.update(1)
            if reason is not None:
                bad.append((path, reason))
    return bad


def _without(folder: ImageFolder, drop: set[Path]) -> ImageFolder:
    kept = [(f, y) for f, y in zip(folder.files, folder.labels) if f not in drop]
    for label, name in enumerate(folder.domains):
        if not any(y == label for _, y in kept):
            raise DataError(f"every image in {folder.root / name} is unreadable; after skipping the bad "
                            "images this domain is empty. Replace the images or remove the folder")
    return ImageFolder(folder.root, folder.domains, tuple(f for f, _ in kept), tuple(y for _, y in kept))


def open_dataset(root: str | Path, skip_bad_images: bool = False,
                 check_images: bool = True) -> tuple[ImageFolder, ImageFolder]:
    """Scan ``root/train`` and ``root/val`` (same domains in both) and, by default, check every image."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; {LAYOUT_HINT}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            hint = f" ({root} looks like a split itself: pass its parent {root.parent})" \
                if root.name in ("train", "val") else ""
            raise DataError(f"{root} has no {split}/ folder{hint}; {LAYOUT_HINT}")
    train = scan_split(root / "train")
    val = scan_split(root / "val")
    if train.domains != val.domains:
        raise DataError(f"{root / 'train'} has domains {list(train.domains)} but {root / 'val'} has "
                        f"{list(val.domains)}; both splits need the same domain folders")
    if not check_images:
        return train, val

    bad = find_bad_images(train) + find_bad_images(val)
    if not bad:
        return train, val
    if not skip_bad_images:
        listed = "\n".join(f"  {path}: {reason}" for path, reason in bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise DataError(f"{len(bad)} unreadable images in {root}:\n{listed}{more}\n"
                        "fix or delete them, or pass --skip-bad-images to skip them")
    warnings.warn(f"skipping {len(bad)} unreadable images in {root} (first: {bad[0][0]}: {bad[0][1]})",
                  stacklevel=2)
    drop = {path for path, _ in bad}
    return _without(train, drop), _without(val, drop)
