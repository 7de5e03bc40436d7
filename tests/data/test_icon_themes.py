"""Icon themes: one icon per file name drawn by several themes, on tiny made-up themes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stargan.data import DataError, open_dataset
from stargan.data.icon_themes import ICONS_DIR, THEMES, make_icon_themes, shared_icons, split_icons

FOLDERS = {"tango": "Tango/32x32/{context}", "gnome": "gnome/32x32/{context}",
           "elementary": "elementary-xfce/{context}/32"}
HUES = {"tango": (250, 40, 40), "gnome": (40, 250, 40), "elementary": (40, 40, 250)}
NAMES = [f"icon-{k:02d}" for k in range(12)]


def make_themes(root: Path, names=NAMES, themes=tuple(THEMES)) -> Path:
    """Each theme draws icon k as a disc of the theme's colour, k pixels wide at the centre's left, on a
    transparent square; ``alias`` is a symlink to icon-00 in every theme; each theme has one icon of its own."""
    for theme in themes:
        folder = root / FOLDERS[theme].format(context="apps")
        folder.mkdir(parents=True)
        for k, name in enumerate([*names, f"only-{theme}"]):
            icon = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
            ImageDraw.Draw(icon).ellipse([4, 4, 28, 28], fill=(*HUES[theme], 255))
            ImageDraw.Draw(icon).rectangle([16 - k, 14, 16, 18], fill=(255, 255, 255, 255))
            icon.save(folder / f"{name}.png")
        os.symlink(f"{names[0]}.png", folder / "alias.png")
    return root


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "RGB"
        return np.asarray(png).astype(np.int16)


@pytest.fixture(scope="module")
def themes(tmp_path_factory):
    return make_themes(tmp_path_factory.mktemp("icons"))


@pytest.fixture(scope="module")
def built(themes, tmp_path_factory):
    return make_icon_themes(tmp_path_factory.mktemp("out") / "data", icons_dir=themes, train_per_domain=10,
                            val_per_domain=4, progress=False)


def test_the_icons_every_theme_draws_count_once_each(themes):
    icons = shared_icons(["tango", "elementary"], themes)
    assert [icon["tango"].stem for icon in icons] == ["alias", *NAMES[1:]]      # alias = icon-00: once
    assert icons[3] == {"tango": themes / "Tango/32x32/apps/icon-03.png",
                        "elementary": themes / "elementary-xfce/apps/32/icon-03.png"}


def test_validation_icons_are_not_training_icons(themes):
    parts = split_icons(shared_icons(list(THEMES), themes), seed=0)
    train, val = ([icon["tango"].stem for icon in parts[s]] for s in ("train", "val"))
    assert len(val) == 2 and len(train) == 10 and not set(train) & set(val)
    assert split_icons(shared_icons(list(THEMES), themes), seed=0) == parts
    assert split_icons(shared_icons(list(THEMES), themes), seed=5) != parts


def test_every_theme_holds_the_same_pictures_in_its_own_drawing(built):
    train, val = open_dataset(built)
    assert train.domains == val.domains == ("elementary", "gnome", "tango")
    for split, count in ((train, 10), (val, 4)):
        names = [sorted(p.name for p in split.files_of(label)) for label in range(3)]
        assert names == [[f"{i:05d}.png" for i in range(count)]] * 3
    for split, count in (("train", 10), ("val", 4)):
        for i in range(count):
            drawn = {theme: pixels(built / split / theme / f"{i:05d}.png") for theme in THEMES}
            for theme, image in drawn.items():   # the icon's colour is its theme's: red, green or blue
                colours = image.reshape(-1, 3)
                assert (colours.argmax(1) == list(HUES).index(theme)).mean() > 0.1
            # the background and the icon's place are the picture's: the same wherever the icons are clear
            corner = (slice(0, 2), slice(0, 2))
            assert np.array_equal(drawn["tango"][corner], drawn["gnome"][corner])
            assert np.array_equal(drawn["tango"][corner], drawn["elementary"][corner])
    assert not np.array_equal(pixels(built / "train/tango/00000.png"), pixels(built / "train/tango/00001.png"))


def test_the_same_seed_draws_the_same_pictures_and_reuses_the_folder(themes, built, tmp_path):
    again = make_icon_themes(tmp_path / "again", icons_dir=themes, train_per_domain=10, val_per_domain=4,
                             progress=False)
    for path in sorted(built.rglob("*.png")):
        assert np.array_equal(pixels(path), pixels(again / path.relative_to(built))), path
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*.png")}
    assert make_icon_themes(again, icons_dir=tmp_path / "gone", train_per_domain=10, val_per_domain=4,
                            progress=False) == again                            # reuse needs no themes
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.png")} == stamps
    other = make_icon_themes(again, themes="gnome,tango", icons_dir=themes, train_per_domain=2,
                             val_per_domain=1, progress=False)
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*.png")) == [
        "train/gnome/00000.png", "train/gnome/00001.png", "train/tango/00000.png", "train/tango/00001.png",
        "val/gnome/00000.png", "val/tango/00000.png"]
    assert json.loads((other / ".complete").read_text())["themes"] == ["gnome", "tango"]


def test_the_readme_names_each_theme_and_its_licence(built):
    readme = (built / "README.txt").read_text()
    assert "10 icons in train/, 2 others in val/." in readme
    for theme, origin in THEMES.items():
        assert f"{theme}: {origin.name}" in readme and origin.licence in readme and origin.package in readme


def test_a_missing_theme_names_its_package_before_anything_is_written(themes, tmp_path):
    partial = make_themes(tmp_path / "icons", themes=("tango", "gnome"))
    with pytest.raises(DataError) as err:
        make_icon_themes(tmp_path / "out", icons_dir=partial, progress=False)
    assert str(err.value) == (f"no icons of the elementary Xfce theme ('elementary') under {partial} (looked "
                              "for elementary-xfce/*/32/*.png). On Debian/Ubuntu: apt-get install "
                              "elementary-xfce-icon-theme")
    assert not (tmp_path / "out").exists()


def test_too_few_shared_icons_is_an_error(tmp_path):
    few = make_themes(tmp_path / "icons", names=NAMES[:5])
    with pytest.raises(DataError, match="share only 5 icons under .*fewer than 10; choose other themes"):
        make_icon_themes(tmp_path / "out", icons_dir=few, progress=False)


@pytest.mark.parametrize("names", ["tango", "tango,tango", "tango,oxygen"])
def test_needs_two_known_themes(tmp_path, names):
    with pytest.raises(DataError, match="at least two different icon themes") as err:
        make_icon_themes(tmp_path / "out", themes=names)
    assert "valid names: tango, gnome, elementary" in str(err.value)


@pytest.mark.skipif(not all((ICONS_DIR / o.pattern.split("/")[0]).is_dir() for o in THEMES.values()),
                    reason="the Debian icon themes are not installed (apt-get install tango-icon-theme "
                    "gnome-icon-theme elementary-xfce-icon-theme)")
def test_the_debian_themes_share_enough_icons():
    icons = shared_icons(list(THEMES))
    assert len(icons) > 100
    assert all(path.is_file() for icon in icons for path in icon.values())
