"""Icon themes: one desktop icon drawn by several Debian icon themes, paired by file name.

A second *style* dataset, of colour pictures: the freedesktop.org icon names (``folder``,
``printer``, ``go-next``, ...) are shared by the themes, each of which draws them in its own way. Each
file name is one icon on one background: what a translation should keep is the icon's subject, its
position and size and the background (two colours and the direction of the gradient between them);
what it should change is the theme's drawing. The true translation of ``train/tango/00042.png`` into
``elementary`` is ``train/elementary/00042.png``. Themes redraw more than a font does (another
folder shape, another arrow), so the true translation changes more of the picture.

The validation pictures use icons that no training picture shows. Icon names that are aliases of one
another (symlinks to one file in every theme) count once.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stargan.data import generated
from stargan.data.folders import DataError
from stargan.data import style_sets
from stargan.data.style_sets import SPLITS, Origin, colour, gradient, make_folders, write_readme


@dataclass(frozen=True)
class IconTheme(Origin):
    """One domain: an icon theme, where its 32 px icons are (a glob under the icons folder)."""

    pattern: str = ""


THEMES = {
    "tango": IconTheme("Tango", "tango-icon-theme", "public domain", "Tango/32x32/*/*.png"),
    "gnome": IconTheme("GNOME (gnome-icon-theme 3.12)", "gnome-icon-theme", "GPL-2+", "gnome/32x32/*/*.png"),
    "elementary": IconTheme("elementary Xfce", "elementary-xfce-icon-theme", "GPL-2+ (a few icons CC-BY-SA-2.0)",
                            "elementary-xfce/*/32/*.png"),
}
ICONS_DIR = Path("/usr/share/icons")
GENERATOR_VERSION = 1     # bump when the drawing changes, so old datasets are written again
VAL_SHARE = 0.2           # of the icons, kept for the validation pictures
MIN_ICONS = 10            # fewer icons shared by the chosen themes is not a dataset
WRITING = ".writing"      # present while the folder is being written (or if interrupted)
ABOUT = ("Icon themes: each file name is one icon (its subject, position, size and background) drawn in",
         "every domain by that domain's icon theme. Made by `stargan data icon-themes` from the themes",
         "below; the pictures are copies of their icons and carry their licences.")


def parse_themes(names: str | Sequence[str]) -> list[str]:
    """Theme names from ``tango,gnome,elementary`` (or a list): at least two, all known, no repeats."""
    return style_sets.parse_domains(names, list(THEMES), "--themes", "icon themes")


def theme_icons(theme: str, icons_dir: Path = ICONS_DIR) -> dict[str, Path]:
    """``{icon name: 32 px PNG}`` of ``theme`` (the first file of a name found in two contexts)."""
    found: dict[str, Path] = {}
    for path in sorted(icons_dir.glob(THEMES[theme].pattern)):
        found.setdefault(path.stem, path)
    if not found:
        wanted = THEMES[theme]
        raise DataError(f"no icons of the {wanted.name} theme ('{theme}') under {icons_dir} (looked for "
                        f"{wanted.pattern}). On Debian/Ubuntu: apt-get install {wanted.package}")
    return found


def shared_icons(themes: Sequence[str], icons_dir: Path = ICONS_DIR) -> list[dict[str, Path]]:
    """The icons every theme draws, one per distinct picture: per icon, ``{theme: file}``, sorted by name.
    Names whose files are the same (symlinks) in every theme as an earlier name's are left out."""
    by_theme = {theme: theme_icons(theme, icons_dir) for theme in themes}
    names = sorted(set.intersection(*(set(icons) for icons in by_theme.values())))
    seen, icons = set(), []
    for name in names:
        files = tuple(os.path.realpath(by_theme[theme][name]) for theme in themes)
        if files not in seen:
            seen.add(files)
            icons.append({theme: by_theme[theme][name] for theme in themes})
    if len(icons) < MIN_ICONS:
        raise DataError(f"the themes {', '.join(themes)} share only {len(icons)} icons under {icons_dir}, "
                        f"fewer than {MIN_ICONS}; choose other themes with --themes")
    return icons


def load_icon(path: Path) -> Image.Image:
    """An icon file as an RGBA image (its transparency is what lets the background through)."""
    try:
        with Image.open(path) as icon:
            return icon.convert("RGBA")
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the icon {path}: {error}") from error


@dataclass(frozen=True)
class IconParams:
    """The content of one file name, shared by every domain."""

    icon: int            # index into the split's icons
    cx: float            # centre, as a fraction of the image side
    cy: float
    size: float          # the icon's side, as a fraction of the image side
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_angle: float      # direction of the background gradient, radians


def sample_params(rng: np.random.Generator, num_icons: int, i: int) -> IconParams:
    """Picture ``i`` of a split: every icon in turn, each time on another background and place."""
    size = rng.uniform(0.6, 0.9)
    return IconParams(icon=i % num_icons, cx=rng.uniform(size / 2, 1 - size / 2),
                      cy=rng.uniform(size / 2, 1 - size / 2), size=size,
                      bg_colors=(colour(rng, s=(0.0, 0.8), v=(0.1, 1.0)), colour(rng, s=(0.0, 0.8), v=(0.1, 1.0))),
                      bg_angle=rng.uniform(0, 2 * np.pi))


def draw(icon: Image.Image, p: IconParams, img_size: int) -> Image.Image:
    """The RGBA ``icon`` resized to ``p.size`` and laid over the background at (cx, cy)."""
    img = gradient(p.bg_colors, p.bg_angle, img_size)
    side = max(1, round(p.size * img_size))
    resized = icon.resize((side, side), Image.Resampling.LANCZOS)
    img.paste(resized, (round(p.cx * img_size - side / 2), round(p.cy * img_size - side / 2)), mask=resized)
    return img


def split_icons(icons: list[dict[str, Path]], seed: int) -> dict[str, list[dict[str, Path]]]:
    """The icons of each split: a seeded share VAL_SHARE for val (at least 2), the rest for train."""
    order = np.random.default_rng([seed, 1]).permutation(len(icons))
    num_val = max(2, round(VAL_SHARE * len(icons)))
    return {"train": [icons[k] for k in sorted(order[num_val:])], "val": [icons[k] for k in sorted(order[:num_val])]}


def make_icon_themes(out: str | Path, themes: str | Sequence[str] = tuple(THEMES), img_size: int = 32,
                     train_per_domain: int = 1000, val_per_domain: int = 100, seed: int = 0,
                     icons_dir: str | Path = ICONS_DIR, progress: bool = True) -> Path:
    """Write ``out/{train,val}/<theme>/NNNNN.png`` (RGB), the same names in every theme; reuse ``out``
    if it already holds these settings. Deterministic for a seed and the same icon files."""
    chosen = parse_themes(themes)
    if img_size < 16 or train_per_domain < 1 or val_per_domain < 1 or seed < 0:
        raise DataError(f"icon themes need img_size >= 16, at least one image per domain and seed >= 0; "
                        f"got img_size={img_size}, train_per_domain={train_per_domain}, "
                        f"val_per_domain={val_per_domain}, seed={seed}")
    out, icons_dir = Path(out), Path(icons_dir)
    settings = {"version": GENERATOR_VERSION, "themes": chosen, "img_size": img_size,
                "train_per_domain": train_per_domain, "val_per_domain": val_per_domain, "seed": seed}
    if generated.holds(out, settings):
        return out
    icons = split_icons(shared_icons(chosen, icons_dir), seed)   # all found before anything is written
    generated.refuse_foreign(out, SPLITS, WRITING, f"{out} already has train/ or val/ but was not written "
                             "by this command; pass a new or empty folder with --out")
    counts = {"train": train_per_domain, "val": val_per_domain}
    with generated.writing(out, settings, WRITING):
        write_readme(out, [*ABOUT, f"{len(icons['train'])} icons in train/, {len(icons['val'])} others in val/."],
                     {theme: (THEMES[theme], icons_dir / THEMES[theme].pattern) for theme in chosen})
        make_folders(out, chosen)
        for split_index, split in enumerate(SPLITS):
            images = {theme: [load_icon(icon[theme]) for icon in icons[split]] for theme in chosen}
            for i in tqdm(range(counts[split]), desc=split, unit="picture", disable=not progress, leave=False):
                params = sample_params(np.random.default_rng([seed, split_index, i]), len(icons[split]), i)
                for theme in chosen:
                    draw(images[theme][params.icon], params, img_size).save(out / split / theme / f"{i:05d}.png")
    return out
