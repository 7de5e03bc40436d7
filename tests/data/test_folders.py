import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from stargan.data import (IMAGE_EXTENSIONS, DataError, ImageFolder, find_bad_images, load_rgb, open_dataset,
                          scan_split)


def write(path: Path, color=(10, 20, 30), size=(6, 6), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def noisy_bytes(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def make_dataset(root: Path, domains=("cat", "dog"), per_domain=2) -> Path:
    for split in ("train", "val"):
        for d, name in enumerate(domains):
            for i in range(per_domain):
                write(root / split / name / f"{i}.png", color=(40 * d, 10 * i, 0))
    return root


def test_scan_order_labels_and_filters(tmp_path):
    split = tmp_path / "train"
    write(split / "zebra" / "b.png")
    write(split / "zebra" / "a.jpg")
    write(split / "zebra" / "sub" / "c.png")            # found recursively
    write(split / "apple" / "x.png")
    write(split / "apple" / ".hidden.png")              # hidden file
    write(split / "apple" / ".cache" / "y.png")         # inside a hidden folder
    write(split / ".git" / "z.png")                     # hidden domain folder
    (split / "apple" / "notes.txt").write_text("not an image")
    (split / "readme.md").write_text("a file next to the domains")

    folder = scan_split(split)
    assert folder.domains == ("apple", "zebra")
    assert [p.relative_to(split).as_posix() for p in folder.files] == [
        "apple/x.png", "zebra/a.jpg", "zebra/b.png", "zebra/sub/c.png"]
    assert folder.labels == (0, 1, 1, 1)
    assert len(folder) == 4
    assert folder.indices_of(1) == [1, 2, 3]
    assert folder.files_of(0) == [split / "apple" / "x.png"]


def test_extensions_any_case(tmp_path):
    names = ["a.JPG", "b.Jpeg", "c.PNG", "d.webp", "e.BMP", "f.gif", "g.tiff"]
    for name in names:
        fmt = {"JPG": "JPEG", "JPEG": "JPEG", "WEBP": "WEBP", "GIF": "GIF", "TIFF": "TIFF"}.get(
            name.split(".")[1].upper())
        write(tmp_path / "d" / name, fmt=fmt)
    folder = scan_split(tmp_path)
    assert [p.name for p in folder.files] == names[:5]
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def test_domains_argument_sets_order_and_reports_differences(tmp_path):
    for name in ("a", "b", "c"):
        write(tmp_path / name / "0.png")
    assert scan_split(tmp_path, domains=["c", "a", "b"]).domains == ("c", "a", "b")
    with pytest.raises(DataError, match=r"missing \['x'\], unexpected \['c'\]"):
        scan_split(tmp_path, domains=["a", "b", "x"])


def test_missing_root_explains_layout(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*ROOT/train/<domain>/\*\.jpg"):
        scan_split(tmp_path / "nope")
    with pytest.raises(DataError, match=r"does not exist.*ROOT/train/<domain>/\*\.jpg"):
        open_dataset(tmp_path / "nope")
    write(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(DataError, match=r"no val/ folder"):
        open_dataset(tmp_path)
    with pytest.raises(DataError, match=r"looks like a split itself"):
        open_dataset(tmp_path / "train")


def test_no_domain_folders(tmp_path):
    write(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"no domain sub-folders"):
        scan_split(tmp_path)


def test_empty_domain_names_folder_and_extensions(tmp_path):
    write(tmp_path / "full" / "0.png")
    write(tmp_path / "empty" / "pic.gif", fmt="GIF")
    with pytest.raises(DataError) as info:
        scan_split(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "pic.gif" in message
    assert all(ext in message for ext in IMAGE_EXTENSIONS)


def test_train_val_domain_mismatch_names_both_lists(tmp_path):
    make_dataset(tmp_path)
    write(tmp_path / "val" / "bird" / "0.png")
    with pytest.raises(DataError, match=r"\['cat', 'dog'\].*\['bird', 'cat', 'dog'\]"):
        open_dataset(tmp_path)


def test_open_dataset_ok(tmp_path):
    train, val = open_dataset(make_dataset(tmp_path))
    assert train.domains == val.domains == ("cat", "dog")
    assert len(train) == len(val) == 4
    assert train.root == tmp_path / "train"


def test_bad_images_are_listed_with_hint(tmp_path):
    make_dataset(tmp_path)
    corrupt = tmp_path / "train" / "cat" / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    png, jpeg = noisy_bytes("PNG"), noisy_bytes("JPEG")
    truncated_png = tmp_path / "train" / "dog" / "cut.png"
    truncated_png.write_bytes(png[: len(png) * 3 // 4])
    truncated_jpg = tmp_path / "val" / "dog" / "cut.jpg"
    truncated_jpg.write_bytes(jpeg[: len(jpeg) * 3 // 4])

    with pytest.raises(DataError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    assert message.startswith("3 unreadable images")
    for path in (corrupt, truncated_png, truncated_jpg):
        assert f"{path}: " in message
    assert "truncated" in message
    assert "pass --skip-bad-images to skip them" in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    train, _ = open_dataset(tmp_path, check_images=False)   # no decoding at all
    assert corrupt in train.files


def test_bad_image_list_is_capped(tmp_path):
    make_dataset(tmp_path)
    for i in range(25):
        (tmp_path / "train" / "cat" / f"bad{i:02d}.png").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    assert message.startswith("25 unreadable images")
    listed = [line for line in message.splitlines() if line.startswith(f"  {tmp_path}")]
    assert len(listed) == 20 and "... and 5 more" in message


def test_skip_bad_images_warns_and_drops(tmp_path):
    make_dataset(tmp_path)
    bad = [tmp_path / "train" / "cat" / "bad.png", tmp_path / "val" / "dog" / "bad.jpg"]
    for path in bad:
        path.write_bytes(b"junk")
    with pytest.warns(UserWarning, match=r"skipping 2 unreadable images") as record:
        train, val = open_dataset(tmp_path, skip_bad_images=True)
    assert len(record) == 1
    assert bad[0] not in train.files and bad[1] not in val.files
    assert len(train) == len(val) == 4
    assert train.labels == (0, 0, 1, 1)


def test_domain_empty_after_skipping_is_an_error(tmp_path):
    make_dataset(tmp_path, per_domain=1)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"train/cat.*empty"):
        open_dataset(tmp_path, skip_bad_images=True)


def test_find_bad_images_returns_reasons(tmp_path):
    good = write(tmp_path / "a" / "good.png")
    (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = find_bad_images(scan_split(tmp_path), workers=2)
    assert [p.name for p, _ in result] == ["bad.png"] and result[0][1]
    assert good not in [p for p, _ in result]


def pixel(path: Path) -> tuple[int, ...]:
    image = load_rgb(path)
    assert image.mode == "RGB"
    return image.getpixel((0, 0))


def test_load_rgb_8bit_modes(tmp_path):
    Image.new("L", (2, 2), 100).save(tmp_path / "l.png")
    assert pixel(tmp_path / "l.png") == (100, 100, 100)
    Image.new("LA", (2, 2), (200, 0)).save(tmp_path / "la.png")
    assert pixel(tmp_path / "la.png") == (0, 0, 0)                     # transparent -> black
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    assert pixel(tmp_path / "rgba.png") == pytest.approx((128, 0, 0), abs=1)
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert pixel(tmp_path / "cmyk.jpg") == pytest.approx((255, 0, 0), abs=2)
    Image.new("1", (2, 2), 1).save(tmp_path / "bw.png")
    assert pixel(tmp_path / "bw.png") == (255, 255, 255)


def test_load_rgb_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png")
    image.save(tmp_path / "pt.png", transparency=0)
    assert np.asarray(load_rgb(tmp_path / "p.png")).tolist() == [[[255, 0, 0], [0, 255, 0]]]
    assert np.asarray(load_rgb(tmp_path / "pt.png")).tolist() == [[[0, 0, 0], [0, 255, 0]]]


def test_load_rgb_scales_16bit_and_float(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")                # read back as "I;16"
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "gi.tif")  # read back as "I"
    for name in ("g16.png", "gi.tif"):
        assert np.asarray(load_rgb(tmp_path / name))[0, :, 0].tolist() == [0, 1, 128, 255], name
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "unit.tif")
    Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32)).save(tmp_path / "wide.tif")
    assert np.asarray(load_rgb(tmp_path / "unit.tif"))[0, :, 1].tolist() == [0, 128, 255]
    assert np.asarray(load_rgb(tmp_path / "wide.tif"))[0, :, 1].tolist() == [0, 100, 255]


def test_load_rgb_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6                                                  # rotate 90 degrees
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (2, 4)


def test_load_rgb_closes_file_and_reports_path(tmp_path):
    path = write(tmp_path / "x.png")
    fd_dir = Path("/proc/self/fd")
    before = len(os.listdir(fd_dir)) if fd_dir.is_dir() else None
    images = [load_rgb(path) for _ in range(5)]
    assert all(im.getpixel((0, 0)) == (10, 20, 30) for im in images)   # pixels usable after close
    if before is not None:
        assert len(os.listdir(fd_dir)) == before
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        load_rgb(tmp_path / "bad.png")


def test_image_folder_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="2 files but 1 labels"):
        ImageFolder(tmp_path, ("a",), (tmp_path / "x", tmp_path / "y"), (0,))
