"""Font styles: one picture of a character drawn in several type families, paired by file name.

A *style* dataset, unlike the object classes of Fashion-MNIST: every domain holds the same pictures
and only the rendering differs, so the true translation of each image is known. What a translation
should keep (drawn the same in every domain for one file name): the character (a-z, A-Z, 0-9), its
position, cap height and rotation, its colour and the background (two colours and the direction of
the gradient between them). What it should change: the type family of the domain. The true
translation of ``train/sans/00042.png`` into ``serif`` is ``train/serif/00042.png``.

The fonts are Debian's (free licences; each package's copyright file is copied into
``OUT/LICENSES/``). A missing font stops before anything is written, naming the package to install.
"""
from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from stargan.data import generated
from stargan.data.folders import DataError
from stargan.data import style_sets
from stargan.data.style_sets import SPLITS, Origin, colour, gradient, make_folders, write_readme


@dataclass(frozen=True)
class FontStyle(Origin):
    """One domain: a font file, the Debian package that ships it, and its licence."""

    file: str = ""


STYLES = {
    "sans": FontStyle("DejaVu Sans Bold", "fonts-dejavu-core",
                      "Bitstream Vera Fonts licence (DejaVu changes: public domain)", "DejaVuSans-Bold.ttf"),
    "serif": FontStyle("Liberation Serif", "fonts-liberation2", "SIL Open Font License 1.1",
                       "LiberationSerif-Regular.ttf"),
    "script": FontStyle("Dancing Script Bold", "fonts-dancingscript", "SIL Open Font License 1.1",
                        "DancingScript-Bold.otf"),
}
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts",
             Path.home() / ".fonts")
CHARACTERS = string.ascii_letters + string.digits
GENERATOR_VERSION = 1     # bump when the drawing changes, so old datasets are written again
SUPERSAMPLE = 4           # draw at 4x and downsample, for anti-aliased edges
WRITING = ".writing"      # present while the folder is being written (or if interrupted)
ABOUT = ("Font styles: each file name is one picture of a character (its position, size, rotation,",
         "colour and background), drawn in every domain with that domain's font. Made by",
         "`stargan data font-styles` from the fonts below; the pictures are renderings of them.")


@dataclass(frozen=True)
class GlyphParams:
    """The content of one file name, shared by every domain."""

    char: str
    cx: float            # centre of the glyph's ink, as a fraction of the image side
    cy: float
    cap_height: float    # the height of the font's "H", as a fraction of the image side
    angle: float         # degrees, counter-clockwise
    color: tuple[int, int, int]
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_angle: float      # direction of the background gradient, radians


def parse_styles(names: str | Sequence[str]) -> list[str]:
    """Style names from ``sans,serif,script`` (or a list): at least two, all known, no repeats."""
    return style_sets.parse_domains(names, list(STYLES), "--styles", "font styles")


def find_font(style: str, font_dirs: Sequence[Path] = FONT_DIRS) -> Path:
    """The font file of ``style`` under one of ``font_dirs`` (searched recursively)."""
    wanted = STYLES[style]
    for folder in font_dirs:
        if folder.is_dir():
            found = sorted(folder.rglob(wanted.file))
            if found:
                return found[0]
    raise DataError(f"font {wanted.file} ({wanted.name}, the '{style}' style) was not found under "
                    f"{', '.join(str(d) for d in font_dirs)}. On Debian/Ubuntu: apt-get install "
                    f"{wanted.package}")


def sample_params(rng: np.random.Generator) -> GlyphParams:
    """Content of one picture; the same distribution for every split."""
    cap_height = rng.uniform(0.50, 0.75)  # large enough that the letterforms, the style, cover much of it
    margin = cap_height / 2 + 0.05
    return GlyphParams(
        char=CHARACTERS[rng.integers(len(CHARACTERS))],
        cx=rng.uniform(margin, 1 - margin), cy=rng.uniform(margin, 1 - margin),
        cap_height=cap_height, angle=rng.uniform(-20, 20),
        # A bright glyph on a darker background, so the glyph stays visible whatever the hues.
        color=colour(rng, s=(0.3, 1.0), v=(0.75, 1.0)),
        bg_colors=(colour(rng, s=(0.2, 0.9), v=(0.05, 0.5)), colour(rng, s=(0.2, 0.9), v=(0.05, 0.5))),
        bg_angle=rng.uniform(0, 2 * np.pi))


@functools.lru_cache(maxsize=None)
def cap_height_per_point(font_file: Path) -> float:
    """The height in pixels of the font's "H" per point of font size."""
    _, top, _, bottom = ImageFont.truetype(str(font_file), 100).getbbox("H", anchor="ls")
    return (bottom - top) / 100


def draw(font_file: Path, p: GlyphParams, img_size: int) -> Image.Image:
    """The picture ``p`` with ``font_file``: fonts are scaled to one cap height and the glyph's ink is
    centred on (cx, cy), so that two styles of one picture differ in the letterforms alone."""
    side = img_size * SUPERSAMPLE
    font = ImageFont.truetype(str(font_file), max(1, round(p.cap_height * side / cap_height_per_point(font_file))))
    left, top, right, bottom = font.getbbox(p.char, anchor="ls")
    cx, cy = p.cx * side, p.cy * side
    ink = Image.new("L", (side, side), 0)
    ImageDraw.Draw(ink).text((cx - (left + right) / 2, cy - (top + bottom) / 2), p.char, fill=255,
                             font=font, anchor="ls")
    ink = ink.rotate(p.angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    img = gradient(p.bg_colors, p.bg_angle, side)
    img.paste(p.color, mask=ink)
    return img.resize((img_size, img_size), Image.Resampling.LANCZOS)


def _settings(styles: list[str], img_size: int, train_per_domain: int, val_per_domain: int, seed: int) -> dict:
    return {"version": GENERATOR_VERSION, "styles": styles, "fonts": [STYLES[s].file for s in styles],
            "img_size": img_size, "train_per_domain": train_per_domain, "val_per_domain": val_per_domain,
            "seed": seed}


def make_font_styles(out: str | Path, styles: str | Sequence[str] = tuple(STYLES), img_size: int = 32,
                     train_per_domain: int = 1000, val_per_domain: int = 100, seed: int = 0,
                     font_dirs: Sequence[Path] = FONT_DIRS, progress: bool = True) -> Path:
    """Write ``out/{train,val}/<style>/NNNNN.png`` (RGB), the same names in every style; reuse ``out``
    if it already holds these settings. Deterministic for a seed and the same font files."""
    chosen = parse_styles(styles)
    if img_size < 16 or train_per_domain < 1 or val_per_domain < 1 or seed < 0:
        raise DataError(f"font styles need img_size >= 16, at least one image per domain and seed >= 0; "
                        f"got img_size={img_size}, train_per_domain={train_per_domain}, "
                        f"val_per_domain={val_per_domain}, seed={seed}")
    out = Path(out)
    settings = _settings(chosen, img_size, train_per_domain, val_per_domain, seed)
    if generated.holds(out, settings):
        return out
    fonts = {style: find_font(style, font_dirs) for style in chosen}  # all found before anything is written
    generated.refuse_foreign(out, SPLITS, WRITING, f"{out} already has train/ or val/ but was not written "
                             "by this command; pass a new or empty folder with --out")
    counts = {"train": train_per_domain, "val": val_per_domain}
    with generated.writing(out, settings, WRITING):
        write_readme(out, ABOUT, {style: (STYLES[style], fonts[style]) for style in chosen})
        make_folders(out, chosen)
        for split_index, split in enumerate(SPLITS):
            for i in tqdm(range(counts[split]), desc=split, unit="picture", disable=not progress, leave=False):
                params = sample_params(np.random.default_rng([seed, split_index, i]))
                for style in chosen:
                    draw(fonts[style], params, img_size).save(out / split / style / f"{i:05d}.png")
    return out
