"""Seeded random metric networks that behave like trained ones, for tests that compare numbers.

A randomly initialised Inception's pool3 features are ~1e-8: its batch norms hold the statistics of
no data, so every layer shrinks its input. Here the running statistics are set, layer by layer, to
those of a few drawn pictures and smooth random images seen through the network's own preprocessing,
which gives features of a trained network's scale (~0.5 on these images, a few units on unseen ones)
and so rounding errors of a trained network's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from stargan.data.demo import DEMO_DOMAINS, draw, sample_params
from stargan.metrics import backbones
from stargan.metrics.weights import seeded_init


def drawn_images(count: int, shape: str, img_size: int, seed: int) -> list[Image.Image]:
    """``count`` demo pictures of ``shape`` (anti-aliased shapes on plain, gradient or striped grounds)."""
    return [draw(shape, sample_params(np.random.default_rng([seed, i])), img_size) for i in range(count)]


def smooth_images(count: int, img_size: int, seed: int) -> list[Image.Image]:
    """``count`` smooth random colour fields (bicubic upsampling of 4 to 16 px noise)."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for i in range(count):
        cells = (4, 8, 16)[i % 3]
        x = torch.rand(1, 3, cells, cells, generator=generator)
        x = F.interpolate(x, size=(img_size, img_size), mode="bicubic", align_corners=False).clamp(0, 1)
        images.append(Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    return images


def write_folder(images: list[Image.Image], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:03d}.png")
    return folder


def as_batch(images: list[Image.Image]) -> torch.Tensor:
    """8-bit RGB images -> ``[N, 3, H, W]`` float32 in [-1, 1]."""
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
    return pixels.float() / 127.5 - 1


def calibration_batch(img_size: int = 64, seed: int = 0) -> torch.Tensor:
    """Two pictures of each demo shape and six smooth fields, in [-1, 1]."""
    drawn = [image for shape in DEMO_DOMAINS for image in drawn_images(2, shape, img_size, seed)]
    return as_batch(drawn + smooth_images(6, img_size, seed))


@torch.no_grad()
def calibrate_batch_norms(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to the batch statistics of ``x`` (the network's input)."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    net.train()(x)  # each layer sees its input normalised by these statistics, as in eval mode
    for norm in norms:
        norm.momentum = 0.1
    return net.eval()


def calibrated_tf_inception(seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random TF Inception state dict in pytorch-fid's ``pt_inception`` format (the 1008-way
    ``fc`` included), calibrated on images seen through clean-fid's resize and scaling."""
    with seeded_init(seed):
        net = backbones._tf_inception_network()
    pixels = backbones.clean_resize(backbones.to_pixels(calibration_batch(seed=seed)))
    return calibrate_batch_norms(net, backbones.tf_inception_input(pixels)).state_dict()
