"""Pillow image -> tensor in [-1, 1], with StarGAN v2's training augmentation.

All randomness comes from an explicit ``torch.Generator`` so a batch is a pure function of its seed.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from stargan.data.images import load_rgb

CROP_SCALE = (0.8, 1.0)   # fraction of the image area kept by the random crop
CROP_RATIO = (0.9, 1.1)   # aspect ratio range of the random crop


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), dtype=torch.float64, generator=generator).item()


def crop_params(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop, the algorithm of RandomResizedCrop with our generator."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target_area = area * _uniform(generator, *CROP_SCALE)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    # Fallback (rarely reached for these ranges): the largest central crop within the ratio range.
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_tensor(img: Image.Image) -> Tensor:
    x = F.to_dtype(F.to_image(img), torch.float32, scale=True)  # [3,H,W] in [0,1]
    return F.normalize(x, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])


def to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def train_transform(img: Image.Image, img_size: int, generator: torch.Generator,
                    crop_prob: float = 0.5) -> Tensor:
    """Random resized crop (with probability ``crop_prob``), resize, random horizontal flip.

    Returns float32 ``[3, img_size, img_size]`` in [-1, 1].
    """
    img = to_rgb(img)
    size = [img_size, img_size]
    if torch.rand((), dtype=torch.float64, generator=generator).item() < crop_prob:
        top, left, h, w = crop_params(img.width, img.height, generator)
        img = F.resized_crop(img, top, left, h, w, size, antialias=True)
    else:
        img = F.resize(img, size, antialias=True)
    if torch.rand((), dtype=torch.float64, generator=generator).item() < 0.5:
        img = F.horizontal_flip(img)
    return to_tensor(img)


def eval_transform(img: Image.Image, img_size: int) -> Tensor:
    """Resize to ``img_size`` x ``img_size``; float32 ``[3, img_size, img_size]`` in [-1, 1]."""
    return to_tensor(F.resize(to_rgb(img), [img_size, img_size], antialias=True))


def eval_images(files: Sequence[str | os.PathLike[str]], img_size: int) -> Tensor:
    """``[N, 3, img_size, img_size]``: image files decoded by :func:`load_rgb`, through :func:`eval_transform`."""
    return torch.stack([eval_transform(load_rgb(f), img_size) for f in files])


def to_pil(t: Tensor) -> Image.Image:
    """``[3, H, W]`` in [-1, 1] (clamped) -> 8-bit RGB image; the inverse of :func:`eval_transform`."""
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"to_pil expects one image tensor of shape [3, H, W], got {list(t.shape)}")
    pixels = ((t.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return F.to_pil_image(pixels)
