"""Font styles: one picture per file name in several Debian fonts, on tiny builds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stargan.data import DataError, open_dataset
from stargan.data.font_styles import FONT_DIRS, STYLES, find_font, make_font_styles

try:
    for _style in STYLES:
        find_font(_style)
    MISSING = ""
except DataError as err:  # .ci/run installs the three font packages
    MISSING = str(err)
needs_fonts = pytest.mark.skipif(bool(MISSING), reason=MISSING)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "RGB"
        return np.asarray(png).astype(np.int16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if MISSING:
        pytest.skip(MISSING)
    return make_font_styles(tmp_path_factory.mktemp("fonts") / "out", train_per_domain=6, val_per_domain=3,
                            progress=False)


@needs_fonts
def test_every_style_holds_the_same_file_names(built):
    train, val = open_dataset(built)
    assert train.domains == val.domains == ("sans", "script", "serif")
    for split, count in ((train, 6), (val, 3)):
        names = [sorted(p.name for p in split.files_of(label)) for label in range(3)]
        assert names == [[f"{i:05d}.png" for i in range(count)]] * 3


@needs_fonts
def test_a_pair_differs_in_the_glyph_alone(built):
    """Two styles of one picture share the background (most pixels equal) but not the glyph; two
    pictures of one style differ nearly everywhere."""
    shares = []
    for i in range(6):
        sans, serif, script = (pixels(built / "train" / s / f"{i:05d}.png") for s in ("sans", "serif", "script"))
        assert sans.shape == (32, 32, 3)
        for other in (serif, script):
            shares.append((np.abs(sans - other).max(axis=2) > 8).mean())
            assert 0.05 < shares[-1] < 0.8, (i, shares[-1])
    assert np.mean(shares) < 0.4
    first, second = pixels(built / "train/sans/00000.png"), pixels(built / "train/sans/00001.png")
    assert (np.abs(first - second).max(axis=2) > 8).mean() > 0.8
    assert not np.array_equal(pixels(built / "val/serif/00000.png"), pixels(built / "train/serif/00000.png"))


@needs_fonts
def test_the_same_seed_draws_the_same_pictures_and_reuses_the_folder(built, tmp_path):
    again = make_font_styles(tmp_path / "again", train_per_domain=6, val_per_domain=3, progress=False)
    for path in sorted(built.rglob("*.png")):
        assert np.array_equal(pixels(path), pixels(again / path.relative_to(built))), path
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*.png")}
    assert make_font_styles(again, train_per_domain=6, val_per_domain=3, progress=False) == again
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.png")} == stamps

    other = make_font_styles(tmp_path / "again", styles="serif,sans", train_per_domain=2, val_per_domain=1,
                             seed=1, progress=False)
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*.png")) == [
        "train/sans/00000.png", "train/sans/00001.png", "train/serif/00000.png", "train/serif/00001.png",
        "val/sans/00000.png", "val/serif/00000.png"]
    assert not np.array_equal(pixels(other / "train/sans/00000.png"), pixels(built / "train/sans/00000.png"))
    assert json.loads((other / ".complete").read_text())["styles"] == ["serif", "sans"]


@needs_fonts
def test_licences_and_a_readme_come_with_the_pictures(built):
    readme = (built / "README.txt").read_text()
    for style, font in STYLES.items():
        assert f"{style}: {font.name}" in readme and font.licence in readme
        if Path("/usr/share/doc", font.package, "copyright").is_file():
            assert (built / "LICENSES" / f"{font.package}.txt").read_text().strip()


def test_a_missing_font_names_its_package_before_anything_is_written(tmp_path):
    with pytest.raises(DataError) as err:
        make_font_styles(tmp_path / "out", styles="serif,script", font_dirs=[tmp_path / "fonts"], progress=False)
    assert str(err.value) == (f"font LiberationSerif-Regular.ttf (Liberation Serif, the 'serif' style) was "
                              f"not found under {tmp_path / 'fonts'}. On Debian/Ubuntu: apt-get install "
                              "fonts-liberation2")
    assert not (tmp_path / "out").exists()


def test_fonts_are_found_anywhere_under_the_font_folders(tmp_path):
    nested = tmp_path / "a" / "b" / STYLES["script"].file
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"")
    assert find_font("script", [tmp_path / "nowhere", tmp_path]) == nested
    assert Path("/usr/share/fonts") in FONT_DIRS


@pytest.mark.parametrize("styles", ["sans", "sans,sans", "sans,cursive"])
def test_needs_two_known_styles(tmp_path, styles):
    with pytest.raises(DataError, match="at least two different font styles") as err:
        make_font_styles(tmp_path / "out", styles=styles)
    assert "valid names: sans, serif, script" in str(err.value)


@pytest.mark.parametrize("bad", [{"img_size": 8}, {"train_per_domain": 0}, {"val_per_domain": 0}, {"seed": -1}])
def test_bad_sizes_are_refused(tmp_path, bad):
    with pytest.raises(DataError, match="font styles need img_size >= 16"):
        make_font_styles(tmp_path / "out", **bad)


@needs_fonts
def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine" / "val" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="already has train/ or val/ but was not written by this command"):
        make_font_styles(tmp_path / "mine", train_per_domain=1, val_per_domain=1, progress=False)
    assert not (tmp_path / "mine" / "train").exists()
