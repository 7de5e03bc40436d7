"""A seeded corpus of hostile and unusual image files for the fuzz test (nothing large is committed).

:func:`make_corpus` writes the files and returns what each must give: ``("ok", (w, h), rgb)`` a decoded
image of that size whose pixel (0, 0) is close to ``rgb`` (None: any), ``("error",)`` the clear error,
or ``("either",)`` (a mutated file that may still decode: then it is just an image).
"""
from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # all listed by stargan.data.list_images
OK_SIZE = (24, 16)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(rng: np.random.Generator, size=OK_SIZE, channels=3) -> Image.Image:
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int, colour_type: int = 2, rows: int = 0) -> bytes:
    """A PNG whose header says ``width`` x ``height``; ``rows`` rows of zeros are really compressed (a
    decompression bomb: a few hundred KB that inflate to ``rows`` full rows)."""
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels)
    body = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def sixteen_bit_rgb_png(value: int) -> bytes:
    """A 2x2 16-bit-per-channel RGB PNG (Pillow cannot write one) with every sample ``value``."""
    header = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)
    row = b"\0" + struct.pack(">H", value) * 6
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(row * 2))
            + png_chunk(b"IEND", b""))


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    start = data.index(b"\xff\xc0")  # baseline SOF: marker, length (2), precision (1), height, width
    return data[:start + 5] + struct.pack(">HH", height, width) + data[start + 9:]


def patch_bmp_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def patch_webp_size(data: bytes, width: int, height: int) -> bytes:
    """A simple lossless WebP ("VP8L"): 14 bits width - 1 and 14 bits height - 1 after the 0x2f byte."""
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0] & ~((1 << 28) - 1)
    bits |= (width - 1) | ((height - 1) << 14)
    return data[:21] + struct.pack("<I", bits) + data[25:]


def patch_gif_size(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", OK_SIZE, colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    options = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


def exif_rotated(orientation: int) -> tuple[bytes, tuple[int, int]]:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.new("RGB", OK_SIZE, (200, 30, 30)), "JPEG", exif=exif, quality=95)
    size = OK_SIZE[::-1] if orientation in (5, 6, 7, 8) else OK_SIZE
    return data, size


def special_cases(rng: np.random.Generator) -> list[tuple[str, bytes, tuple]]:
    """Valid but unusual files (with what they must decode to) and forged ones that must be refused."""
    red = (255, 0, 0)
    palette = Image.new("P", OK_SIZE, 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    grey16 = Image.fromarray(np.full((16, 24), 32768, dtype=np.uint16))
    cases: list[tuple[str, bytes, tuple]] = [
        ("one_pixel.png", encode(Image.new("RGB", (1, 1), red), "PNG"), ("ok", (1, 1), red)),
        ("one_pixel.jpg", encode(Image.new("RGB", (1, 1), red), "JPEG", quality=100), ("ok", (1, 1), red)),
        ("one_pixel.bmp", encode(Image.new("RGB", (1, 1), red), "BMP"), ("ok", (1, 1), red)),
        ("one_pixel.webp", encode(Image.new("RGB", (1, 1), red), "WEBP", lossless=True), ("ok", (1, 1), red)),
        ("thin.png", encode(Image.new("RGB", (2000, 1), red), "PNG"), ("ok", (2000, 1), red)),
        ("grey16.png", encode(grey16, "PNG"), ("ok", OK_SIZE, (128, 128, 128))),
        ("rgb16.png", sixteen_bit_rgb_png(65535), ("ok", (2, 2), (255, 255, 255))),
        ("cmyk.jpg", encode(Image.new("CMYK", OK_SIZE, (0, 255, 255, 0)), "JPEG", quality=100),
         ("ok", OK_SIZE, None)),
        ("palette_transparent.png", encode(palette, "PNG", transparency=0), ("ok", OK_SIZE, (0, 0, 0))),
        ("transparent.webp", encode(Image.new("RGBA", OK_SIZE, (255, 0, 0, 0)), "WEBP", lossless=True,
                                    exact=True), ("ok", OK_SIZE, (0, 0, 0))),
        ("la.png", encode(Image.new("LA", OK_SIZE, (255, 0)), "PNG"), ("ok", OK_SIZE, (0, 0, 0))),
        ("bilevel.bmp", encode(Image.new("1", OK_SIZE, 1), "BMP"), ("ok", OK_SIZE, (255, 255, 255))),
        ("animated_gif.png", animated("GIF"), ("ok", OK_SIZE, red)),       # wrong extension too
        ("animated.webp", animated("WEBP"), ("ok", OK_SIZE, red)),
        ("animated_apng.png", animated("PNG"), ("ok", OK_SIZE, red)),
        ("png_named.jpg", encode(Image.new("RGB", OK_SIZE, red), "PNG"), ("ok", OK_SIZE, red)),
        ("jpeg_named.webp", encode(Image.new("RGB", OK_SIZE, red), "JPEG", quality=100), ("ok", OK_SIZE, red)),
        ("tiff_named.bmp", encode(Image.new("RGB", OK_SIZE, red), "TIFF"), ("ok", OK_SIZE, red)),
        ("float_tiff_named.png", encode(Image.new("F", OK_SIZE, 0.5), "TIFF"), ("ok", OK_SIZE, (128, 128, 128))),
        ("eps_named.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 24 16\nshowpage\n", ("error",)),
        ("empty.png", b"", ("error",)),
        ("empty.jpg", b"", ("error",)),
        ("text.jpg", b"this is not an image\n" * 20, ("error",)),
        # Forged sizes: refused from the header, before any pixel is decoded.
        ("bomb_60000.png", forged_png(60000, 60000), ("error",)),
        ("bomb_60000.jpg", patch_jpeg_size(encode(noise(rng), "JPEG"), 60000, 60000), ("error",)),
        ("bomb_60000.bmp", patch_bmp_size(encode(noise(rng), "BMP"), 60000, 60000), ("error",)),
        ("bomb_65535.jpeg", patch_gif_size(encode(noise(rng), "GIF"), 65535, 65535), ("error",)),
        ("bomb_16384.webp", patch_webp_size(encode(noise(rng), "WEBP", lossless=True), 16384, 16384),
         ("error",)),
        # Real bombs below Pillow's own limit: 9000 x 9000 RGBA of zeros (324 MB inflated, 1 GB as
        # composited RGB) from a few hundred KB, and a JPEG header of 9000 x 9000 with 24 x 16 of data.
        ("bomb_9000_rgba.png", forged_png(9000, 9000, colour_type=6, rows=9000), ("error",)),
        ("bomb_9000.jpg", patch_jpeg_size(encode(noise(rng), "JPEG"), 9000, 9000), ("error",)),
        ("zero_width.png", forged_png(0, 16), ("error",)),
        ("zero_width.bmp", patch_bmp_size(encode(noise(rng), "BMP"), 0, 16), ("error",)),
    ]
    for orientation in range(1, 9):
        data, size = exif_rotated(orientation)
        cases.append((f"exif_{orientation}.jpg", data, ("ok", size, (200, 30, 30))))
    return cases


def base_files(rng: np.random.Generator) -> list[bytes]:
    """Valid small files of every format and several modes, the seeds of the mutations."""
    images = [noise(rng), noise(rng, channels=1), noise(rng, channels=4), noise(rng, size=(7, 5))]
    files = []
    for image in images:
        files.append(encode(image, "PNG"))
        files.append(encode(image, "WEBP", quality=50))
        files.append(encode(image, "GIF"))
        files.append(encode(image, "TIFF"))
        files.append(encode(image if image.mode != "RGBA" else image.convert("RGB"), "JPEG", quality=80))
        files.append(encode(image if image.mode != "RGBA" else image.convert("RGB"), "JPEG", quality=80,
                            progressive=True))
        files.append(encode(image, "BMP"))
    files.append(encode(Image.new("CMYK", OK_SIZE, (10, 20, 30, 40)), "JPEG"))
    files.append(encode(Image.fromarray(np.arange(384, dtype=np.uint16).reshape(16, 24) * 100), "PNG"))
    files += [animated("GIF"), animated("WEBP"), animated("PNG")]
    return files


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    how = rng.choice(("truncate", "truncate", "flip", "flip", "splice", "header_only", "zero_run"))
    if how == "truncate":
        return data[:rng.randrange(0, len(data))], how
    if how == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(0, min(len(out), 64) if rng.random() < 0.5 else len(out))
            out[position] = rng.randrange(256)
        return bytes(out), how
    if how == "splice":
        cut = rng.randrange(0, len(data))
        return data[:cut] + rng.randbytes(rng.randint(1, 200)) + data[cut + rng.randint(0, 50):], how
    if how == "header_only":
        return data[:rng.randint(8, 40)] + rng.randbytes(rng.randint(0, 400)), how
    start = rng.randrange(0, len(data))
    return data[:start] + b"\0" * rng.randint(1, 300) + data[start + rng.randint(0, 300):], how


def make_corpus(out: Path, count: int = 1100, seed: int = 0) -> dict[Path, tuple]:
    """Write at least ``count`` files into ``out``; return each path with what it must give."""
    out.mkdir(parents=True, exist_ok=True)
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    expected: dict[Path, tuple] = {}
    for name, data, expect in special_cases(np_rng):
        (out / name).write_bytes(data)
        expected[out / name] = expect
    seeds = base_files(np_rng)
    magic = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"BM",
             b"II*\x00", b"MM\x00*"]
    index = 0
    while len(expected) < count:
        kind = rng.random()
        if kind < 0.1:
            data, how, expect = rng.randbytes(rng.randint(1, 3000)), "random", ("error",)
        elif kind < 0.2:
            data, how, expect = rng.choice(magic) + rng.randbytes(rng.randint(0, 2000)), "magic", ("either",)
        else:
            data, how = mutate(rng.choice(seeds), rng)
            expect = ("either",)
        path = out / f"{index:04d}_{how}{rng.choice(EXTENSIONS)}"
        path.write_bytes(data)
        expected[path] = expect
        index += 1
    return expected
