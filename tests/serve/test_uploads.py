"""Hostile and odd uploads: every one ends in an UploadError with a message for the user, or in RGB."""
from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stargan.serve.uploads import UploadError, read_upload


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, with a tiny compressed body:
    the shape of a decompression bomb, without the memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def photo(path: Path, size: tuple[int, int] = (40, 30), **save: object) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)
    return path


def test_a_good_image_decodes_to_rgb(tmp_path: Path) -> None:
    upload = read_upload(photo(tmp_path / "cat.jpg"), name="cat.jpg")
    assert upload.image.mode == "RGB" and upload.image.size == (40, 30) and upload.notes == []


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, not an image\n")
    with pytest.raises(UploadError, match="notes.png is not an image Pillow can read"):
        read_upload(path, name="notes.png")


def test_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UploadError, match="empty"):
        read_upload(tmp_path / "empty.png")
    with pytest.raises(UploadError, match="did not arrive"):
        read_upload(tmp_path / "gone.png")


def test_truncated_image(tmp_path: Path) -> None:
    whole = photo(tmp_path / "whole.png", size=(64, 64)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UploadError, match="cut.png .*could not be decoded.*truncated"):
        read_upload(cut, name="cut.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    assert bomb.stat().st_size < 200
    with pytest.raises(UploadError, match="pixels"):
        read_upload(bomb, name="bomb.png")
    # Under Pillow's own limit but over the server's: the server's limit is named.
    with pytest.raises(UploadError, match=r"5000 x 5000 pixels .*limit of 1,000,000"):
        read_upload(png_header_only(tmp_path / "big.png", 5000, 5000), name="big.png", max_pixels=1_000_000)


def test_file_size_limit(tmp_path: Path) -> None:
    path = photo(tmp_path / "big.bmp", size=(200, 200))
    with pytest.raises(UploadError, match="big.bmp is 0.1 MiB, above this server's limit"):
        read_upload(path, name="big.bmp", max_bytes=50_000)


def test_animated_gif_uses_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "blue", "green")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    upload = read_upload(path, name="anim.gif")
    assert upload.notes == ["anim.gif is animated (3 frames): its first frame is used"]
    assert upload.image.getpixel((10, 10)) == (255, 0, 0)


def test_16_bit_grey_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    upload = read_upload(path, name="scan.png")
    assert "16-bit" in upload.notes[0]
    assert upload.image.getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped to 255 of 65535


@pytest.mark.slow
def test_the_hostile_image_corpus_gives_rgb_or_an_upload_error(tmp_path: Path, recwarn) -> None:
    """The data tests' fuzz corpus (truncated, forged, bombs, animations, odd modes): nothing escapes."""
    spec = importlib.util.spec_from_file_location(
        "hostile_images", Path(__file__).parents[1] / "data" / "hostile_images.py")
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    corpus = hostile.make_corpus(tmp_path / "images", 1100, seed=0)
    decoded = refused = 0
    for path in corpus:
        try:
            upload = read_upload(path, name=path.name)
        except UploadError as error:
            assert str(error).startswith(path.name), str(error)  # the user's name, not a server path
            assert str(tmp_path) not in str(error)
            refused += 1
        else:
            assert upload.image.mode == "RGB" and min(upload.image.size) >= 1
            decoded += 1
    assert decoded > 100 and refused > 100
    assert [w.message for w in recwarn if issubclass(w.category, UserWarning)
            and "PIL" in Path(w.filename).parts] == []  # data.images.quiet_pillow
