"""What the paired style datasets (``font-styles``, ``icon-themes``) share: a picture's background,
the licences of the Debian packages its domains are drawn from, and the folders' layout.

Each file name is one picture, drawn in every domain: ``OUT/{train,val}/<domain>/NNNNN.png``. The
folder also holds ``README.txt`` (what the pictures are, where each domain comes from, under which
licence) and ``LICENSES/<package>.txt``, a copy of each package's Debian copyright file.
"""
from __future__ import annotations

import colorsys
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stargan.data.images import DataError

SPLITS = ("train", "val")
DEBIAN_DOCS = Path("/usr/share/doc")


@dataclass(frozen=True)
class Origin:
    """Where one domain is drawn from: a font or icon theme, its Debian package and its licence."""

    name: str
    package: str
    licence: str


def parse_domains(names: str | Sequence[str], known: Sequence[str], option: str, what: str) -> list[str]:
    """Domain names from ``a,b,c`` (or a list): at least two, all in ``known``, no repeats; else an error
    naming ``option`` (``--styles``) and ``what`` (``font styles``)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{option} needs at least two different {what}, got {list(names)}"
                        f"{f' (unknown: {unknown})' if unknown else ''}; valid names: {', '.join(known)}")
    return list(names)


def colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    """A random RGB colour with saturation in ``s`` and value in ``v`` (any hue)."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return round(r * 255), round(g * 255), round(b * 255)


def gradient(colours: tuple[tuple[int, int, int], tuple[int, int, int]], angle: float, side: int) -> Image.Image:
    """A ``side`` x ``side`` RGB image going from ``colours[0]`` to ``colours[1]`` along ``angle`` (radians)."""
    c1, c2 = (np.array(c, dtype=np.float64) for c in colours)
    grid = np.linspace(-0.5, 0.5, side)
    t = (np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]) / math.sqrt(0.5) + 0.5
    pixels = c1 * (1 - t[..., None]) + c2 * t[..., None]
    return Image.fromarray(np.round(pixels.clip(0, 255)).astype(np.uint8))


def write_readme(out: Path, about: Sequence[str], origins: dict[str, tuple[Origin, Path]]) -> None:
    """``OUT/README.txt``: ``about`` and, per domain, its origin (``origins``: domain -> origin, the file or
    folder it was read from) and licence; each package's copyright file goes to ``OUT/LICENSES/``."""
    licences = out / "LICENSES"
    shutil.rmtree(licences, ignore_errors=True)
    licences.mkdir()
    lines = [*about, ""]
    for domain, (origin, source) in origins.items():
        copyright_file = DEBIAN_DOCS / origin.package / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, licences / f"{origin.package}.txt")
            where = f"LICENSES/{origin.package}.txt"
        else:
            where = f"see the copyright file of the {origin.package} package"
        lines.append(f"{domain}: {origin.name} ({source}, Debian package {origin.package}); licence: "
                     f"{origin.licence}; {where}")
    (out / "README.txt").write_text("\n".join(lines) + "\n")


def make_folders(out: Path, domains: Sequence[str]) -> None:
    """Empty ``OUT/<split>/<domain>/`` folders (what a previous, other build left there is removed)."""
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
        for domain in domains:
            (out / split / domain).mkdir(parents=True)
