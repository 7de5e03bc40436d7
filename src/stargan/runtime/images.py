"""Images in and out of the exported graphs: the preprocessing of ``stargan.data.transforms`` in numpy.

Decoding keeps the essentials of ``stargan.data.images`` (the gate every torch-side image passes): the
size in the header is checked before any pixel is decoded, an animation gives its first frame, EXIF
orientation is applied, and any mode becomes 8-bit RGB (alpha over black). Pixels then follow
``eval_transform`` exactly: Pillow's bilinear resize (what torchvision does to a Pillow image), then
``x / 255 * 2 - 1``; outputs go back to 8 bits as ``to_pil`` does.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

MAX_IMAGE_PIXELS = 8192 * 8192  # as stargan.data.images: larger images are refused before decoding
_16BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

ImageInput = Image.Image | str | os.PathLike[str]


class ImageError(ValueError):
    """An image that cannot be used; the message names it and says why."""


def _to_8bit_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in _16BIT_MODES:  # scaled, not clipped, to 8 bits
        values = np.clip(np.asarray(im, dtype=np.int32), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if im.mode == "F":  # 0..1, or 0..255 when a value exceeds 1
        values = np.nan_to_num(np.asarray(im, dtype=np.float32))
        values = values * 255 if values.max(initial=0.0) <= 1.0 else values
        return Image.fromarray(np.round(np.clip(values, 0, 255)).astype(np.uint8)).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def _decode(im: Image.Image) -> Image.Image:
    width, height = im.size
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{width}x{height} pixels: empty, or above the limit of "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
    im.load()
    try:
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation
            im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block is not worth refusing the image for
        pass
    rgb = _to_8bit_rgb(im)
    return rgb.copy() if rgb is im else rgb


def load_image(image: ImageInput) -> Image.Image:
    """An 8-bit RGB image from a Pillow image or a file; :class:`ImageError` when it cannot be used."""
    name = "the image" if isinstance(image, Image.Image) else str(image)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            if isinstance(image, Image.Image):
                return _decode(image)
            Image.init()
            formats = [f for f in Image.OPEN if f != "EPS"]  # EPS would run Ghostscript
            with Image.open(image, formats=formats) as opened:
                return _decode(opened)
    except ImageError as error:
        raise ImageError(f"cannot use {name}: {error}") from error
    except Exception as error:  # any failure to decode untrusted bytes makes the image unusable
        raise ImageError(f"cannot read {name}: {type(error).__name__}: {error}") from error


def to_array(image: ImageInput, img_size: int, crop_size: int = 0) -> np.ndarray:
    """[1, 3, img_size, img_size] float32 in [-1, 1]; ``crop_size`` (v1): a center crop first when it
    fits inside the image."""
    rgb = load_image(image)
    if 0 < crop_size <= min(rgb.size):
        top, left = round((rgb.height - crop_size) / 2.0), round((rgb.width - crop_size) / 2.0)
        rgb = rgb.crop((left, top, left + crop_size, top + crop_size))
    if rgb.size != (img_size, img_size):
        rgb = rgb.resize((img_size, img_size), Image.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) / np.float32(255)
    return ((x - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)[None]


def to_uint8(batch: np.ndarray) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] (clipped) -> uint8 [B, 3, H, W], rounded as ``to_pil`` rounds."""
    return np.round((np.clip(batch, -1, 1) + 1) * np.float32(127.5)).astype(np.uint8)


def to_images(batch: np.ndarray) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] (clipped) -> B 8-bit RGB images."""
    return [Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0)), "RGB") for p in to_uint8(batch)]
