"""Image tensors to pictures, shared by StarGAN v1 and v2 sampling: eval mode for a set of networks,
[-1, 1] tensors to [0, 1] grids and uint8 arrays, and atomic PNG writing."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from stargan.nets.v1 import Networks as V1Networks
from stargan.nets.v2 import Networks

GRID_PADDING = 2         # pixels between the cells of every grid


@contextlib.contextmanager
def eval_mode(nets: Networks | V1Networks) -> Iterator[None]:
    """Put every network in eval mode, restoring each one's previous mode afterwards."""
    modules = [net for _, net in nets.items()]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, was_training):
            m.train(flag)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (clamped, since G's outputs are not bounded)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def image_grid(rows: list[torch.Tensor], nrow: int) -> torch.Tensor:
    """Rows of [nrow, 3, S, S] images in [-1, 1] -> [3, H, W] in [0, 1]."""
    return make_grid(to_unit(torch.cat(rows)).cpu(), nrow=nrow, padding=GRID_PADDING)


def save_grid(grid: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a [3, H, W] grid in [0, 1] as a PNG, atomically; parent folders are created."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_grid writes PNG files; give a path ending in .png, got {path}")
    if grid.dim() != 3 or grid.size(0) not in (1, 3):
        raise ValueError(f"grid must have shape [3, H, W] (or [1, H, W]), got {tuple(grid.shape)}")
    pixels = to_uint8(grid)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> [H, W, C] uint8."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()
