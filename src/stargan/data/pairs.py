"""Splits paired by file name: the same picture in every domain, so the true translation is known.

``val/sans/00042.png`` and ``val/serif/00042.png`` are one picture in two styles (as
``stargan data font-styles`` writes them). Equal names alone do not make a pairing: the demo shapes
and Fashion-MNIST number their files 00000.png, 00001.png, ... in every domain too, with unrelated
pictures behind one number. So a split counts as paired when every domain holds the same names *and*
a file's namesake in another domain is clearly nearer to it than the other files there are.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

from stargan.data.folders import ImageFolder
from stargan.data.transforms import eval_images

CHECKED_NAMES = 32      # names per pair of domains whose images the nearness check compares
NEARER = 0.75           # namesakes' mean L1 must be below this share of the other files' mean L1


def pair_key(file: Path, domain_folder: Path) -> str:
    """A file's name within its domain folder, without the extension (``a/00042.png`` -> ``a/00042``)."""
    return file.relative_to(domain_folder).with_suffix("").as_posix()


def same_names(split: ImageFolder) -> list[dict[str, Path]] | None:
    """Per domain, ``{pair key: file}``, when every domain holds the same keys (each once); else None."""
    by_domain = []
    for label, name in enumerate(split.domains):
        files = split.files_of(label)
        keyed = {pair_key(f, split.root / name): f for f in files}
        if len(keyed) != len(files):   # 00042.png and 00042.jpg in one domain
            return None
        by_domain.append(keyed)
    if len(by_domain) < 2 or len(by_domain[0]) < 2 or any(d.keys() != by_domain[0].keys() for d in by_domain):
        return None
    return by_domain


def namesake_ratio(a: list[Path], b: list[Path], img_size: int) -> float:
    """Mean L1 of ``a[i]`` to its namesake ``b[i]`` over the mean L1 of ``a[i]`` to ``b[i + 1]``."""
    x, y = eval_images(a, img_size), eval_images(b, img_size)
    namesakes = (x - y).abs().mean()
    others = (x - y.roll(1, dims=0)).abs().mean()
    return float(namesakes / others) if others > 0 else 1.0


def paired_by_name(split: ImageFolder, img_size: int) -> list[dict[str, Path]] | None:
    """Per domain, ``{pair key: file}`` when ``split`` is paired by name (see the module's docstring);
    else None. The nearness check reads CHECKED_NAMES images per domain."""
    by_domain = same_names(split)
    if by_domain is None:
        return None
    keys = sorted(by_domain[0])[:CHECKED_NAMES]
    for first, second in combinations(by_domain, 2):
        if namesake_ratio([first[k] for k in keys], [second[k] for k in keys], img_size) >= NEARER:
            return None
    return by_domain


def namesakes(files: list[Path], source_folder: Path, pairs: dict[str, Path]) -> list[Path]:
    """The file with each of ``files``' names in another domain (``pairs``: that domain's keys)."""
    return [pairs[pair_key(f, source_folder)] for f in files]

