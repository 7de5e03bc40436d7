"""The images a command reads: one file, or every image under a folder."""
from __future__ import annotations

from pathlib import Path


def input_images(path: Path) -> list[Path]:
    """``path`` itself, or the images under a folder (recursively); none is a one-line error."""
    from stargan.data.folders import IMAGE_EXTENSIONS, list_images

    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return files
