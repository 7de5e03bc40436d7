"""Decoding image files that may be hostile (truncated, forged headers, bombs) into 8-bit RGB.

Every image passes the same gate, whether it comes from a dataset, ``stargan translate`` or the Python
API: the size read from the header is checked before any pixel is decoded, the first frame of an
animation is taken, EXIF orientation is applied and any Pillow mode becomes RGB. Every failure is a
:class:`DataError` naming the file and the reason; nothing else escapes.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger images are refused before decoding (8192 x 8192, about 200 MB as RGB): no training or
# translation input needs more, and a forged header cannot make us allocate gigabytes. Raise it here
# for huge photos. It stays below Pillow's own limit, so Pillow's DecompressionBombError never decides.
MAX_IMAGE_PIXELS = 8192 * 8192
# Pillow renders EPS by running Ghostscript, an external program: never for a file we did not write.
REFUSED_FORMATS = frozenset({"EPS"})

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_16BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ORIENTATION = 0x0112  # EXIF tag


class DataError(ValueError):
    """A problem with the user's dataset or image; the message says which file or folder and what to do."""


class _Refused(ValueError):
    """An image refused by our own checks; its message is the whole reason."""


def to_8bit_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: alpha composited over black, 16-bit grey scaled (not clipped) to
    8 bits, floats read as 0..1 (or 0..255 when a value exceeds 1)."""
    if im.mode == "RGB":
        return im
    if im.mode in _16BIT_MODES:
        # round(v / 257) in integer arithmetic (v * 255 / 65535; never exactly .5 for integer v).
        values = np.clip(np.asarray(im, dtype=np.int32), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float32))
        if values.max(initial=0.0) <= 1.0:
            values = values * 255
        return Image.fromarray(np.round(np.clip(values, 0, 255)).astype(np.uint8)).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")


def check_size(width: int, height: int) -> None:
    """Refuse empty images and images above :data:`MAX_IMAGE_PIXELS` (from the header alone)."""
    if width < 1 or height < 1:
        raise _Refused(f"the header says {width}x{height} pixels: an empty image")
    if width * height > MAX_IMAGE_PIXELS:
        raise _Refused(f"the header says {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), "
                       f"above the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (a decompression bomb, or "
                       "a photo to resize first; the limit is stargan.data.images.MAX_IMAGE_PIXELS)")


def _decode_opened(opened: Image.Image) -> Image.Image:
    """Check, decode (the current frame), orient and convert an opened image."""
    check_size(*opened.size)
    opened.load()  # a file just opened is at its first frame; later frames are never read
    im = opened
    try:
        if im.getexif().get(_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block is not worth rejecting the image for
        im = opened
    rgb = to_8bit_rgb(im)
    # Pillow documents that closing may free the pixels of `opened`: return an independent image.
    return rgb.copy() if rgb is opened else rgb


@contextlib.contextmanager
def quiet_pillow() -> Iterator[None]:
    """Silence Pillow's UserWarnings while an image is opened and decoded: corrupt TIFF/EXIF tags
    ("Corrupt EXIF data", "Truncated File Read"), palette transparency given as bytes. The image then
    decodes (transparency composited by :func:`to_8bit_rgb`) or fails with the error that says why,
    so they add only noise. Decompression-bomb warnings (RuntimeWarning) still pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        yield


def open_formats() -> list[str]:
    """The formats Pillow may open for us: all it knows but :data:`REFUSED_FORMATS`."""
    Image.init()
    return [name for name in Image.OPEN if name not in REFUSED_FORMATS]


def reason(error: BaseException) -> str:
    """What was wrong with an image, in words, from the exception its decoding raised."""
    if isinstance(error, _Refused):
        return str(error)
    if isinstance(error, UnidentifiedImageError):  # its message only repeats the path
        return "not a readable image (unknown format or corrupt header)"
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels (a decompression bomb?): {error}"
    text = str(error) or "no details"
    return f"{type(error).__name__}: {text}"


def _decode_file(path: Path) -> Image.Image:
    if path.is_dir():
        raise _Refused("a folder, not an image file")
    with quiet_pillow(), Image.open(path, formats=open_formats()) as opened:
        return _decode_opened(opened)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` fully into an RGB image and close the file; :class:`DataError` when it cannot be used.

    Any Pillow mode is accepted (see :func:`to_8bit_rgb`), EXIF orientation is applied, animations
    give their first frame, and images above :data:`MAX_IMAGE_PIXELS` are refused before decoding.
    """
    path = Path(path)
    try:
        return _decode_file(path)
    except Exception as error:  # any failure to decode untrusted bytes makes the image unusable
        raise DataError(f"cannot read image {path}: {reason(error)}") from error


def rgb_image(image: Image.Image, name: str = "the image") -> Image.Image:
    """An already opened (possibly not yet loaded) Pillow image through the same gate as :func:`load_rgb`
    (its current frame, for an animation)."""
    try:
        with quiet_pillow():
            return _decode_opened(image)
    except Exception as error:
        raise DataError(f"cannot use {name}: {reason(error)}") from error


def image_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes."""
    try:
        _decode_file(Path(path))
    except Exception as error:
        return reason(error)
    return None
