"""Splits paired by file name: same names in every domain, and namesakes nearer than other files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stargan.data import make_demo_dataset, scan_split
from stargan.data.pairs import namesakes, pair_key, paired_by_name, same_names


def write(folder: Path, pictures: dict[str, np.ndarray]) -> None:
    for name, pixels in pictures.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)


def pictures(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


def restyled(pixels: np.ndarray) -> np.ndarray:
    """The same picture in another 'style': a little brighter."""
    return np.minimum(pixels.astype(np.int16) + 20, 255).astype(np.uint8)


def test_namesakes_that_are_one_picture_make_a_pairing(tmp_path):
    base = pictures(5)
    write(tmp_path / "a", {f"{i}.png": p for i, p in enumerate(base)})
    write(tmp_path / "b", {f"{i}.bmp": restyled(p) for i, p in enumerate(base)})   # extensions may differ
    split = scan_split(tmp_path)
    pairs = paired_by_name(split, 16)
    assert pairs is not None and [sorted(d) for d in pairs] == [["0", "1", "2", "3", "4"]] * 2
    assert namesakes([tmp_path / "a" / "3.png"], tmp_path / "a", pairs[1]) == [tmp_path / "b" / "3.bmp"]


def test_equal_names_over_unrelated_pictures_are_not_a_pairing(tmp_path):
    base = pictures(5)
    write(tmp_path / "a", {f"{i}.png": p for i, p in enumerate(base)})
    write(tmp_path / "b", {f"{(i + 2) % 5}.png": restyled(p) for i, p in enumerate(base)})  # shuffled names
    split = scan_split(tmp_path)
    assert same_names(split) is not None
    assert paired_by_name(split, 16) is None


def test_the_demo_shapes_share_numbers_but_are_not_paired(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", img_size=16, train_per_domain=1, val_per_domain=8)
    split = scan_split(root / "val")
    assert same_names(split) is not None and paired_by_name(split, 16) is None


@pytest.mark.parametrize("layout", [
    {"a": ["0.png", "1.png"], "b": ["0.png", "2.png"]},                     # a name missing in b
    {"a": ["0.png", "1.png"], "b": ["0.png", "1.png", "2.png"]},            # an extra name in b
    {"a": ["0.png", "0.bmp", "1.png"], "b": ["0.png", "1.png"]},            # one name twice in a
    {"a": ["0.png"], "b": ["0.png"]},                                       # one picture is no pairing
], ids=["missing", "extra", "twice", "single"])
def test_names_must_be_the_same_in_every_domain(tmp_path, layout):
    for domain, names in layout.items():
        write(tmp_path / domain, dict(zip(names, pictures(len(names)))))
    assert same_names(scan_split(tmp_path)) is None


def test_keys_keep_sub_folders_and_drop_extensions(tmp_path):
    assert pair_key(tmp_path / "a" / "x" / "00042.png", tmp_path / "a") == "x/00042"
