"""A built-in synthetic dataset: one domain per shape, drawn deterministically (no download).

What a translation should keep (content, drawn the same way in every domain): the object's centre,
its size (the diameter of the circle it fits in) and its rotation. What varies within a domain
(style): the object's colour and the background (colour and pattern: plain, vertical gradient or
vertical stripes). Only the shape tells the domains apart.
"""
from __future__ import annotations

import colorsys
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stargan.data import generated

DEMO_DOMAINS = ("circle", "square", "triangle")
SPLITS = ("train", "val")
GENERATOR_VERSION = 3     # bump when the drawing changes, so old datasets are regenerated
SUPERSAMPLE = 4           # draw at 4x and downsample, for anti-aliased edges
GENERATING = ".generating"    # present while the folder is being written (or if interrupted)


@dataclass(frozen=True)
class ShapeParams:
    cx: float        # centre, as a fraction of the image side
    cy: float
    diameter: float  # of the circumscribed circle, as a fraction of the image side
    angle: float     # degrees; 0 is upright (square axis-aligned, triangle pointing up)
    color: tuple[int, int, int]
    background: str  # "plain" | "gradient" | "stripes"
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    period: float    # stripe period, as a fraction of the image side


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return round(r * 255), round(g * 255), round(b * 255)


def sample_params(rng: np.random.Generator) -> ShapeParams:
    """Content and style of one image; the same distribution for every domain."""
    diameter = rng.uniform(0.40, 0.75)
    margin = diameter / 2 + 0.03
    return ShapeParams(
        cx=rng.uniform(margin, 1 - margin),
        cy=rng.uniform(margin, 1 - margin),
        diameter=diameter,
        angle=rng.uniform(-30, 30),
        # Bright objects on darker backgrounds, so the object stays visible whatever the hues.
        color=_hsv(rng, s=(0.5, 1.0), v=(0.75, 1.0)),
        background=("plain", "gradient", "stripes")[rng.integers(3)],
        bg_colors=(_hsv(rng, s=(0.2, 0.9), v=(0.1, 0.5)), _hsv(rng, s=(0.2, 0.9), v=(0.1, 0.5))),
        period=rng.uniform(0.18, 0.32),
    )


def _background(p: ShapeParams, side: int) -> Image.Image:
    c1, c2 = (np.array(c, dtype=np.float64) for c in p.bg_colors)
    if p.background == "plain":
        column = np.repeat(c1[None], side, axis=0)                     # [side, 3]
        pixels = np.repeat(column[:, None], side, axis=1)
    elif p.background == "gradient":                                  # top to bottom
        t = np.linspace(0, 1, side)[:, None, None]
        pixels = np.broadcast_to(c1 * (1 - t) + c2 * t, (side, side, 3))
    else:                                                             # vertical stripes
        band = (np.arange(side) / (p.period * side) * 2).astype(int) % 2
        pixels = np.broadcast_to(np.where(band[None, :, None] == 0, c1, c2), (side, side, 3))
    return Image.fromarray(np.round(pixels).astype(np.uint8))


def draw(shape: str, p: ShapeParams, img_size: int) -> Image.Image:
    side = img_size * SUPERSAMPLE
    img = _background(p, side)
    cx, cy, radius = p.cx * side, p.cy * side, p.diameter * side / 2
    pen = ImageDraw.Draw(img)
    if shape == "circle":
        pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=p.color)
    else:
        # Vertex angles in image coordinates (y down): -90 degrees points up.
        first, count = {"square": (-45.0, 4), "triangle": (-90.0, 3)}[shape]
        angles = [math.radians(first + p.angle + k * 360 / count) for k in range(count)]
        pen.polygon([(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles], fill=p.color)
    return img.resize((img_size, img_size), Image.Resampling.LANCZOS)


def _settings(img_size: int, train_per_domain: int, val_per_domain: int, seed: int) -> dict:
    return {"version": GENERATOR_VERSION, "domains": list(DEMO_DOMAINS), "img_size": img_size,
            "train_per_domain": train_per_domain, "val_per_domain": val_per_domain, "seed": seed}


def make_demo_dataset(out: str | Path, img_size: int = 32, train_per_domain: int = 600,
                      val_per_domain: int = 32, seed: int = 0) -> Path:
    """Write ``out/{train,val}/<shape>/NNNNN.png``; reuse ``out`` if it already holds these settings.

    ``out/.complete`` (the settings as JSON) is written last, so an interrupted generation is redone.
    """
    if img_size < 8 or train_per_domain < 1 or val_per_domain < 1 or seed < 0:
        raise ValueError(f"make_demo_dataset needs img_size >= 8, at least one image per domain and "
                         f"seed >= 0; got img_size={img_size}, train_per_domain={train_per_domain}, "
                         f"val_per_domain={val_per_domain}, seed={seed}")
    out = Path(out)
    settings = _settings(img_size, train_per_domain, val_per_domain, seed)
    if generated.holds(out, settings):
        return out
    generated.refuse_foreign(out, SPLITS, GENERATING, f"{out} already has train/ or val/ but is not a demo "
                             f"dataset (no {generated.COMPLETE} marker); pass an empty or new folder for "
                             "the demo data, or delete that one")
    counts = {"train": train_per_domain, "val": val_per_domain}
    with generated.writing(out, settings, GENERATING):
        for split_index, split in enumerate(SPLITS):
            shutil.rmtree(out / split, ignore_errors=True)
            for domain_index, shape in enumerate(DEMO_DOMAINS):
                folder = out / split / shape
                folder.mkdir(parents=True)
                for i in range(counts[split]):
                    rng = np.random.default_rng([seed, split_index, domain_index, i])
                    draw(shape, sample_params(rng), img_size).save(folder / f"{i:05d}.png")
    return out
