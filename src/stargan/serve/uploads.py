"""Checks on images uploaded to the web page, before any pixel is decoded.

Uploads are untrusted: a text file renamed ``.png``, a truncated download, a small PNG that claims
60,000 x 60,000 pixels (a decompression bomb), an animated GIF, a 16-bit scan, a 2 GB file. Each
becomes an :class:`UploadError` whose message the page shows as it is; nothing here raises anything
else for a bad file, so the server keeps serving.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from stargan.data.images import MAX_IMAGE_PIXELS, DataError, load_rgb, open_formats, quiet_pillow, reason

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB: a large JPEG from a phone camera is ~10 MiB
MAX_PIXELS = min(40_000_000, MAX_IMAGE_PIXELS)  # 40 megapixels, 120 MB as RGB: a web server's budget


class UploadError(ValueError):
    """An uploaded file that is not a usable image; the message is written for the page's user."""


@dataclass(frozen=True)
class Upload:
    image: Image.Image                              # decoded RGB
    notes: list[str] = field(default_factory=list)  # what was changed on the way (first frame, bit depth)


def read_upload(path: str | Path, name: str = "the upload", max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS) -> Upload:
    """Decode the uploaded file at ``path`` (a temporary file the web framework wrote) into RGB.

    ``name`` is what the user called the file; messages use it rather than the temporary path.
    Raises :class:`UploadError` for anything that is not a still, reasonably sized image.
    """
    path = Path(path)
    _check_size(path, name, max_bytes)
    width, height, fmt, mode, frames = _read_header(path, name, max_pixels)
    notes: list[str] = []
    if frames > 1:
        notes.append(f"{name} is animated ({frames} frames): its first frame is used")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append(f"{name} has {'16-bit' if mode != 'F' else 'floating-point'} pixels: "
                     "scaled to 8 bits")
    return Upload(image=_decode(path, name, fmt), notes=notes)


def _check_size(path: Path, name: str, max_bytes: int) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise UploadError(f"{name}: the upload did not arrive ({error.strerror}); please upload it again") \
            from error
    if size == 0:
        raise UploadError(f"{name} is empty (0 bytes); please upload an image file")
    if size > max_bytes:
        raise UploadError(f"{name} is {size / 2**20:.1f} MiB, above this server's limit of "
                          f"{max_bytes / 2**20:.0f} MiB; please upload a smaller image")


def _read_header(path: Path, name: str, max_pixels: int) -> tuple[int, int, str, str, int]:
    """Width, height, format, mode and frame count, from the header alone; too many pixels is an error."""
    try:
        with warnings.catch_warnings(), quiet_pillow():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=open_formats()) as header:  # reads the header only
                width, height = header.size
                fmt, mode = header.format or "unknown", header.mode
                frames = getattr(header, "n_frames", 1) if width * height <= max_pixels else 1
    except UnidentifiedImageError as error:
        raise UploadError(f"{name} is not an image Pillow can read (PNG, JPEG, WebP, BMP, GIF, TIFF...); "
                          "please upload a photo or picture file") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(f"{name} claims more pixels than this server decodes ({max_pixels:,}); "
                          "please upload a smaller image") from error
    except Exception as error:  # broken headers raise many types (OSError, SyntaxError, struct.error...)
        raise UploadError(f"{name} is not a readable image ({reason(error)})") from error
    if width * height > max_pixels:
        raise UploadError(f"{name} is {width} x {height} pixels ({width * height:,}), above this server's "
                          f"limit of {max_pixels:,} pixels; please upload a smaller image")
    return width, height, fmt, mode, frames


def _decode(path: Path, name: str, fmt: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb(path)  # the package's image gate: first frame, any mode to RGB, EXIF orientation
    except (DataError, Image.DecompressionBombWarning) as error:
        why = str(error).replace(f"cannot read image {path}: ", "")
        if "truncated" in why:
            why = "the file is truncated (an interrupted download or copy?)"
        raise UploadError(f"{name} ({fmt}) could not be decoded: {why}; please upload it again "
                          "or try another file") from error
