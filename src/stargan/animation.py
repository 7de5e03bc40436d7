"""Style-interpolation animations, streamed to .gif (Pillow) or .mp4 (imageio-ffmpeg) frame by frame.

Two walks through style space, with the same frames: each source image on the left, its translation
on the right, one row per source, ``frames_per_transition`` frames from one style code to the next.

- Between reference images (:func:`write_interpolation`): the style encoder's codes E(ref_0) ->
  E(ref_1) -> ... -> E(ref_0).
- Latent (:func:`write_latent_interpolation`, like the official ``video_latent``): for each target
  domain in turn, ``num_styles`` latent codes z go through that domain's branch of the mapping network
  and the walk runs over the resulting *style codes* (after the mapping network, after truncation
  towards the domain's mean style by ``psi``), F(z_0) -> F(z_1) -> ... -> F(z_0); the domains' walks
  follow each other in the one video, with a cut from one domain to the next (styles of different
  domains are not mixed). Defaults: 4 codes per domain, psi = 1 (no truncation), seed 0, the same
  codes z for every domain, so the video's key frames are ``stargan translate --num-styles 4 --seed 0``.

Styles move linearly (``torch.lerp``), ``frames_per_transition`` (default 30, at 30 fps: one second)
frames from one code to the next, the first frame of a transition showing exactly its code's style.
Unlike the release's latent video (an open path per domain), a walk returns to its first code, as the
reference walk does, so each one loops.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid
from tqdm import tqdm

from stargan.nets.v2 import MaskFn, Masks, Networks
from stargan.imaging import eval_mode, to_uint8, to_unit
from stargan.sampling.v2 import (check_images, device_of, domain_tensor, latent_dim_of, latent_styles,
                                 masks_of)

ANIMATION_SUFFIXES = (".gif", ".mp4")


# ----------------------------------------------------------------------------------------------
# Frames

def interpolation_frames(nets: Networks, x_src: torch.Tensor, refs: torch.Tensor,
                         y_refs: torch.Tensor, frames_per_transition: int = 30,
                         mask_fn: MaskFn | None = None) -> Iterator[np.ndarray]:
    """Lazily yield [H, W, 3] uint8 frames: each source next to its translation, row by row.

    The style moves linearly from E(refs[0]) to E(refs[1]), ..., and back to E(refs[0]), so the
    animation loops; there are ``len(refs) * frames_per_transition`` frames. ``mask_fn``: the face
    masks of the sources (w_hpf > 0).
    """
    check_images(x_src, "x_src", nets)
    check_images(refs, "refs", nets)
    if refs.size(0) < 2:
        raise ValueError(f"interpolation needs at least 2 reference images, got {refs.size(0)}")
    _check_frames(frames_per_transition)
    y_refs = domain_tensor(y_refs, refs.size(0), nets)
    return _interpolation_frames(nets, x_src, refs, y_refs, frames_per_transition, mask_fn)


@torch.inference_mode()
def _interpolation_frames(nets: Networks, x_src: torch.Tensor, refs: torch.Tensor,
                          y_refs: torch.Tensor, frames_per_transition: int,
                          mask_fn: MaskFn | None) -> Iterator[np.ndarray]:
    x_src = x_src.to(device_of(nets))
    masks = masks_of(mask_fn, x_src)
    with eval_mode(nets):
        styles = nets.style_encoder(refs.to(x_src.device), y_refs)  # [R, style_dim]
        yield from _style_walk(nets, x_src, masks, styles, frames_per_transition)


def latent_interpolation_frames(nets: Networks, x_src: torch.Tensor, y_trgs: Sequence[int],
                                num_styles: int = 4, seed: int = 0, psi: float = 1.0,
                                frames_per_transition: int = 30,
                                mask_fn: MaskFn | None = None) -> Iterator[np.ndarray]:
    """Lazily yield the frames of a latent walk through the style space of each domain in ``y_trgs``.

    For each target domain y in turn: ``num_styles`` codes z_k ~ N(0, I) (drawn from ``seed``, the
    same codes for every domain) are mapped to style codes s_k = F_y(z_k), pulled towards the
    domain's mean style by ``psi`` (1 = none; the mean is seeded by ``seed`` too), and the style moves
    linearly s_0 -> s_1 -> ... -> s_0. So s_k is exactly the k-th style of ``Translator.translate(...,
    num_styles=num_styles, seed=seed, psi=psi)`` (and ``stargan translate``) in that domain.
    There are ``len(y_trgs) * num_styles * frames_per_transition`` frames, laid out as in
    :func:`interpolation_frames`; ``mask_fn``: the face masks of the sources (w_hpf > 0).
    """
    check_images(x_src, "x_src", nets)
    if len(y_trgs) == 0:
        raise ValueError("latent interpolation needs at least one target domain, got none")
    domain_tensor(torch.tensor(list(y_trgs)), len(y_trgs), nets)  # every index in range
    if num_styles < 2:
        raise ValueError(f"latent interpolation walks between at least 2 latent codes per domain, "
                         f"got num_styles={num_styles}")
    _check_frames(frames_per_transition)
    return _latent_interpolation_frames(nets, x_src, [int(y) for y in y_trgs], num_styles, seed, psi,
                                        frames_per_transition, mask_fn)


@torch.inference_mode()
def _latent_interpolation_frames(nets: Networks, x_src: torch.Tensor, y_trgs: list[int],
                                 num_styles: int, seed: int, psi: float, frames_per_transition: int,
                                 mask_fn: MaskFn | None) -> Iterator[np.ndarray]:
    x_src = x_src.to(device_of(nets))
    masks = masks_of(mask_fn, x_src)
    with eval_mode(nets):
        for y in y_trgs:  # the styles of one domain at a time, when its walk begins
            styles = _latent_styles(nets, y, num_styles, seed, psi)
            yield from _style_walk(nets, x_src, masks, styles, frames_per_transition)


def _latent_styles(nets: Networks, y: int, num_styles: int, seed: int, psi: float) -> torch.Tensor:
    """[num_styles, style_dim]: F_y(z) for seeded z, truncated; drawn as Translator.translate draws."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_styles, latent_dim_of(nets), generator=generator)
    y_batch = torch.full((num_styles,), y, dtype=torch.long, device=device_of(nets))
    return latent_styles(nets, z, y_batch, psi, generator)


def _style_walk(nets: Networks, x_src: torch.Tensor, masks: Masks, styles: torch.Tensor,
                frames_per_transition: int) -> Iterator[np.ndarray]:
    """Frames of x_src while the style moves styles[0] -> styles[1] -> ... -> styles[0]."""
    n = x_src.size(0)
    targets = torch.roll(styles, shifts=-1, dims=0)  # the last style goes back to the first
    for start, end in zip(styles, targets):
        for k in range(frames_per_transition):
            s = torch.lerp(start, end, k / frames_per_transition)
            x_fake = nets.generator(x_src, s.expand(n, -1), masks=masks)
            # Interleave to [src_0, fake_0, src_1, fake_1, ...]: one source per row.
            cells = torch.stack([x_src, x_fake], dim=1).flatten(0, 1)
            yield to_uint8(make_grid(to_unit(cells), nrow=2, padding=0))


def _check_frames(frames_per_transition: int) -> None:
    if frames_per_transition < 1:
        raise ValueError(f"frames_per_transition must be >= 1, got {frames_per_transition}")


# ----------------------------------------------------------------------------------------------
# Files

class _FrameWriter(Protocol):
    def append_data(self, im: np.ndarray) -> None: ...

    def close(self) -> None: ...


def write_interpolation(nets: Networks, x_src: torch.Tensor, refs: torch.Tensor, y_refs: torch.Tensor,
                        path: str | os.PathLike[str], frames_per_transition: int = 30,
                        fps: int = 30, mask_fn: MaskFn | None = None) -> Path:
    """Write a looping style-interpolation animation (.gif, or .mp4 with imageio-ffmpeg).

    ``x_src`` is [N, 3, S, S] (N >= 1), ``refs`` [R, 3, S, S] with their domains ``y_refs`` [R].
    Frames are generated and written one at a time, so memory does not grow with the length.
    """
    frames = interpolation_frames(nets, x_src, refs, y_refs, frames_per_transition, mask_fn)
    total = refs.size(0) * frames_per_transition
    return write_animation(tqdm(frames, total=total, desc="interpolate", unit="frame"), path, fps=fps)


def write_latent_interpolation(nets: Networks, x_src: torch.Tensor, y_trgs: Sequence[int],
                               path: str | os.PathLike[str], num_styles: int = 4, seed: int = 0,
                               psi: float = 1.0, frames_per_transition: int = 30, fps: int = 30,
                               mask_fn: MaskFn | None = None) -> Path:
    """Write the latent walk of :func:`latent_interpolation_frames` (.gif, or .mp4 with imageio-ffmpeg).

    With the defaults, each domain's walk lasts ``num_styles * frames_per_transition / fps`` = 4 s.
    Frames are generated and written one at a time, so memory does not grow with the length.
    """
    frames = latent_interpolation_frames(nets, x_src, y_trgs, num_styles, seed, psi,
                                         frames_per_transition, mask_fn)
    total = len(y_trgs) * num_styles * frames_per_transition
    return write_animation(tqdm(frames, total=total, desc="interpolate", unit="frame"), path, fps=fps)


def check_animation_path(path: str | os.PathLike[str]) -> ModuleType | None:
    """Refuse an output path that cannot be written as an animation, before any work.

    Returns imageio (v2 API) for an .mp4, None for a .gif; an .mp4 without imageio-ffmpeg is an
    :class:`ImportError` saying what to install.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"cannot write {path.name}: animations are written as "
                         f"{' or '.join(ANIMATION_SUFFIXES)}; give a path ending in one of them")
    if path.is_dir():
        raise ValueError(f"cannot write the animation to {path}: it is a folder; give a file name")
    return _import_imageio_ffmpeg(path) if suffix != ".gif" else None


def write_animation(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: int = 30) -> Path:
    """Stream [H, W, 3] uint8 frames to a .gif or .mp4 file, one frame at a time.

    GIF frame delays are whole hundredths of a second, so e.g. 30 fps plays at 1/0.03 s.
    The frames go to a hidden file beside ``path`` that replaces ``path`` once complete: if anything
    fails, it is removed and an earlier file at ``path`` is left as it was.
    """
    path = Path(path)
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    imageio = check_animation_path(path)  # fail before any work
    path.parent.mkdir(parents=True, exist_ok=True)
    # The real suffix last: ffmpeg picks the container from it.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        writer: _FrameWriter
        if imageio is None:
            writer = _GifWriter(tmp, fps)
        else:
            # imageio's FFMPEG writer pipes each appended frame straight to an ffmpeg process.
            writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps)
        try:
            count = 0
            for frame in frames:
                writer.append_data(frame)
                count += 1
            if count == 0:
                raise ValueError(f"no frames to write to {path}")
        finally:
            writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _import_imageio_ffmpeg(path: Path) -> ModuleType:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's FFMPEG format needs it)
    except ImportError as err:
        raise ImportError(f"writing {path.suffix} videos needs imageio and imageio-ffmpeg: "
                          "pip install imageio imageio-ffmpeg (or pip install 'stargan[video]'), "
                          "or write a .gif instead") from err
    return imageio


class _GifWriter:
    """Animated GIF written frame by frame (GIF89a), each frame with its own 256-colour palette.

    Pillow can only save a multi-frame GIF from frames it holds all at once, so each frame is
    encoded alone by Pillow and its image block is copied into the output stream.
    """

    def __init__(self, path: Path, fps: int, loop: int = 0):
        self._file = open(path, "wb")
        self._delay = max(2, round(100 / fps))  # hundredths of a second; < 2 is slowed by viewers
        self._loop = loop                       # 0 = forever
        self._size: tuple[int, int] | None = None

    def append_data(self, im: np.ndarray) -> None:
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"frames must be [H, W, 3] uint8 arrays, got {im.dtype} {im.shape}")
        height, width = im.shape[:2]
        if self._size is None:
            self._size = (width, height)
            self._write_header(width, height)
        elif self._size != (width, height):
            raise ValueError(f"all frames must have the same size: the first was {self._size[0]}x"
                             f"{self._size[1]}, this one is {width}x{height}")
        palette, descriptor, data = _encode_gif_frame(Image.fromarray(im).quantize(256))
        # Graphic control extension: disposal 1 (keep), delay, no transparency.
        self._file.write(b"\x21\xf9\x04\x04" + self._delay.to_bytes(2, "little") + b"\x00\x00")
        self._file.write(descriptor + palette + data)
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        if self._size is not None:
            self._file.write(b"\x3b")  # trailer
        self._file.close()

    def _write_header(self, width: int, height: int) -> None:
        # Logical screen without a global palette (every frame carries its own).
        screen = width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x00\x00\x00"
        loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + self._loop.to_bytes(2, "little") + b"\x00"
        self._file.write(b"GIF89a" + screen + loop)


def _encode_gif_frame(image: Image.Image) -> tuple[bytes, bytes, bytes]:
    """(palette, image descriptor using it as local palette, LZW data) of a one-frame GIF."""
    buffer = io.BytesIO()
    image.save(buffer, format="GIF")
    data = buffer.getvalue()
    palette, pos = _color_table(data, flags=data[10], pos=13)
    while data[pos] == 0x21:  # skip extensions: introducer, label, sub-blocks
        pos = _skip_sub_blocks(data, pos + 2)
    if data[pos] != 0x2C:
        raise RuntimeError("Pillow wrote a GIF without an image block; cannot stream this frame")
    descriptor = bytearray(data[pos:pos + 10])
    local, start = _color_table(data, flags=descriptor[9], pos=pos + 10)
    palette = local or palette
    if not palette:
        raise RuntimeError("Pillow wrote a GIF frame without a palette; cannot stream this frame")
    size_bits = (len(palette) // 3).bit_length() - 2  # table holds 2 ** (size_bits + 1) colours
    descriptor[9] = 0x80 | (descriptor[9] & 0x40) | size_bits  # local table, keep interlace flag
    end = _skip_sub_blocks(data, start + 1)  # LZW minimum code size, then data sub-blocks
    return palette, bytes(descriptor), data[start:end]


def _color_table(data: bytes, flags: int, pos: int) -> tuple[bytes, int]:
    """The colour table announced by ``flags`` starting at ``pos`` (empty if none), and its end."""
    if not flags & 0x80:
        return b"", pos
    length = 3 * 2 ** ((flags & 0x07) + 1)
    return data[pos:pos + length], pos + length


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1
