"""stargan.animation: the reference and latent style walks, and the streamed GIF/MP4 writer."""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan import animation, imaging
from stargan.nets.v2 import Networks
from stargan.sampling import v2 as sampling
from tests.sampling.test_v2 import RecordingMasks, hpf_nets, images, tiny_nets, unit


@pytest.fixture
def nets() -> Networks:
    return tiny_nets()


def bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def count_generator_calls(nets: Networks, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list holding how many times G has run so far."""
    calls = [0]
    forward = nets.generator.forward

    def spy(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(nets.generator, "forward", spy)
    return calls


# ---------------------------------------------------------------- between reference images

def test_interpolation_gif_has_expected_frames(nets: Networks, tmp_path: Path) -> None:
    x_src, refs, y_refs = images(2, 16, seed=1), images(3, 16, seed=2), torch.tensor([0, 1, 1])
    path = animation.write_interpolation(nets, x_src, refs, y_refs, tmp_path / "interp.gif",
                                        frames_per_transition=4, fps=25)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 * 4
        assert gif.size == (2 * 16, 2 * 16)  # [source | translation] per row, one row per source
        assert gif.info["duration"] == 40
        gif.seek(0)
        first = np.asarray(gif.convert("RGB")).astype(int)
    # Frame 0 shows the sources and their translation with the first reference's style.
    expected = imaging.to_uint8(unit(x_src[0])).astype(int)
    assert np.abs(first[:16, :16] - expected).mean() < 12  # palette quantisation only


def test_interpolation_is_streamed_frame_by_frame(nets: Networks, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "interp.gif"
    sizes_at_each_frame: list[int] = []
    forward = nets.generator.forward

    def spy(*args, **kwargs):  # G runs once per frame: record what is on disk by then
        sizes_at_each_frame.append(bytes_on_disk(tmp_path))
        return forward(*args, **kwargs)

    monkeypatch.setattr(nets.generator, "forward", spy)
    animation.write_interpolation(nets, images(1, 16), images(2, 16), torch.tensor([0, 1]), path,
                                 frames_per_transition=5)
    assert len(sizes_at_each_frame) == 10
    # Every frame is on disk (in the file that becomes `path`) before the next one is computed.
    assert all(a < b for a, b in zip(sizes_at_each_frame, sizes_at_each_frame[1:]))
    assert [p.name for p in tmp_path.iterdir()] == ["interp.gif"]


@pytest.mark.parametrize("height,width", [(8, 12), (24, 40)])  # small frames are not interlaced
def test_gif_frames_round_trip(tmp_path: Path, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(4):
        colours = rng.integers(0, 256, (6, 3), dtype=np.uint8)  # few colours: no quantisation error
        frames.append(colours[rng.integers(0, 6, (height, width))])
    path = animation.write_animation(iter(frames), tmp_path / "frames.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 4
        for i, frame in enumerate(frames):
            gif.seek(i)
            assert np.array_equal(np.asarray(gif.convert("RGB")), frame)


def test_write_animation_rejects_bad_input(tmp_path: Path) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        animation.write_animation([frame], tmp_path / "a.avi")
    with pytest.raises(ValueError, match="same size"):
        animation.write_animation([frame, np.zeros((8, 9, 3), np.uint8)], tmp_path / "b.gif")
    with pytest.raises(ValueError, match="no frames"):
        animation.write_animation([], tmp_path / "c.gif")
    assert list(tmp_path.iterdir()) == []  # failed writes leave nothing behind


def test_mp4_without_imageio_ffmpeg_says_what_to_install(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes `import imageio_ffmpeg` fail
    with pytest.raises(ImportError, match="pip install imageio imageio-ffmpeg"):
        animation.write_animation([np.zeros((16, 16, 3), np.uint8)], tmp_path / "out" / "a.mp4")
    assert not (tmp_path / "out").exists()


def test_interpolation_needs_two_references(nets: Networks, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 reference"):
        animation.write_interpolation(nets, images(1, 16), images(1, 16), torch.tensor([0]),
                                     tmp_path / "a.gif")


def test_interpolation_mp4(nets: Networks, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    imageio = pytest.importorskip("imageio.v2")
    path = animation.write_interpolation(nets, images(2, 16), images(2, 16), torch.tensor([0, 1]),
                                        tmp_path / "interp.mp4", frames_per_transition=3, fps=10)
    with imageio.get_reader(path) as reader:
        assert reader.count_frames() == 6
        assert reader.get_meta_data()["size"] == (32, 32)



def test_interpolation_frames_use_the_source_masks():
    nets, x = hpf_nets(), images(1, 32)
    masks = RecordingMasks()
    frames = list(animation.interpolation_frames(nets, x, images(2, 32, seed=3), torch.tensor([0, 1]),
                                                 frames_per_transition=2, mask_fn=masks))
    plain = list(animation.interpolation_frames(nets, x, images(2, 32, seed=3), torch.tensor([0, 1]),
                                                frames_per_transition=2))
    assert len(frames) == 4 and len(masks.inputs) == 1 and torch.equal(masks.inputs[0], x)
    assert not np.array_equal(frames[1], plain[1])


# ---------------------------------------------------------------- latent walk (mapping network)

def latent_frames(nets: Networks, x: torch.Tensor, y_trgs: list[int], **kwargs) -> list[np.ndarray]:
    return list(animation.latent_interpolation_frames(nets, x, y_trgs, **kwargs))


def test_latent_frame_count_and_layout(nets: Networks) -> None:
    x = images(2, 16)
    frames = latent_frames(nets, x, [1, 0], num_styles=3, frames_per_transition=4)
    assert len(frames) == 2 * 3 * 4  # domains x transitions (one per code: the walk loops) x frames
    assert all(f.shape == (2 * 16, 2 * 16, 3) and f.dtype == np.uint8 for f in frames)
    for frame in frames[::5]:  # each source on the left of its row, unchanged
        assert np.array_equal(frame[16:, :16], imaging.to_uint8(unit(x[1])))


@pytest.mark.parametrize("psi", [1.0, 0.5])
def test_latent_keyframes_are_the_translations_with_each_codes_style(nets: Networks, psi: float) -> None:
    x, seed, num_styles, per = images(1, 16), 3, 3, 4
    frames = latent_frames(nets, x, [1, 0], num_styles=num_styles, seed=seed, psi=psi,
                           frames_per_transition=per)
    for d, y in enumerate([1, 0]):
        # What `stargan translate --num-styles 3 --seed 3 --psi ...` draws in domain y.
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(num_styles, 4, generator=generator)
        translations = sampling.translate(nets, x, y, z=z, psi=psi, generator=generator)
        for k in range(num_styles):
            first = frames[(d * num_styles + k) * per]
            expected = imaging.to_uint8(unit(translations[k])).astype(int)
            assert np.abs(first[:, 16:].astype(int) - expected).max() <= 1, (y, k)  # float rounding

    # Half-way through the last transition of the last domain (0): the walk goes back to its first code.
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_styles, 4, generator=generator)
    with imaging.eval_mode(nets), torch.no_grad():
        s = nets.mapping_network(z, torch.zeros(num_styles, dtype=torch.long))
        if psi != 1.0:
            s = torch.lerp(sampling.mean_style(nets, 0, generator=generator), s, psi)
        halfway = nets.generator(x, torch.lerp(s[2], s[0], 0.5)[None])
    expected = imaging.to_uint8(unit(halfway[0])).astype(int)
    assert np.abs(frames[-per + per // 2][:, 16:].astype(int) - expected).max() <= 1


def test_latent_walk_is_seeded(nets: Networks) -> None:
    x = images(1, 16)
    run = lambda seed: latent_frames(nets, x, [0, 1], num_styles=2, seed=seed, frames_per_transition=2)
    first, again, other = run(7), run(7), run(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a[:, 16:], b[:, 16:]) for a, b in zip(first, other))


def test_latent_walk_is_streamed_to_the_writer_one_frame_at_a_time(nets: Networks, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    frames = animation.latent_interpolation_frames(nets, images(1, 16), [0, 1], num_styles=2,
                                                   frames_per_transition=3)
    assert inspect.isgenerator(frames)
    calls = count_generator_calls(nets, monkeypatch)
    assert calls == [0]  # nothing runs before the first frame is asked for
    next(frames)
    assert calls == [1]
    frames.close()

    appended: list[int] = []  # G's calls so far, each time the writer receives a frame

    class CountingWriter:
        def __init__(self, path: Path, fps: int):
            self.closed = False

        def append_data(self, im: np.ndarray) -> None:
            assert im.shape == (16, 32, 3)
            appended.append(calls[0])

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(animation, "_GifWriter", CountingWriter)
    calls[0] = 0
    animation.write_latent_interpolation(nets, images(1, 16), [0, 1], tmp_path / "walk.gif", num_styles=2,
                                         frames_per_transition=3)
    assert appended == list(range(1, 2 * 2 * 3 + 1))  # frame i written right after G's i-th run


def test_latent_walk_gif(nets: Networks, tmp_path: Path) -> None:
    path = animation.write_latent_interpolation(nets, images(1, 16), [0, 1], tmp_path / "walk.gif",
                                                num_styles=2, frames_per_transition=3, fps=25)
    with Image.open(path) as gif:
        assert gif.n_frames == 2 * 2 * 3 and gif.size == (32, 16) and gif.info["duration"] == 40
    assert [p.name for p in tmp_path.iterdir()] == ["walk.gif"]


def test_latent_walk_uses_the_source_masks() -> None:
    nets, x = hpf_nets(), images(1, 32)
    masks = RecordingMasks()
    frames = latent_frames(nets, x, [0, 1], num_styles=2, frames_per_transition=2, mask_fn=masks)
    plain = latent_frames(nets, x, [0, 1], num_styles=2, frames_per_transition=2)
    assert len(frames) == 8 and len(masks.inputs) == 1 and torch.equal(masks.inputs[0], x)
    assert not np.array_equal(frames[1], plain[1])
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, generator=generator)
    expected = sampling.translate(nets, x, 1, z=z, mask_fn=masks)  # translation's masks: the same
    assert np.abs(frames[4][:, 32:].astype(int) - imaging.to_uint8(unit(expected[0])).astype(int)).max() <= 1


def test_latent_walk_refuses_bad_arguments_before_any_work(nets: Networks, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_generator_calls(nets, monkeypatch)
    x = images(1, 16)
    with pytest.raises(ValueError, match="out of range"):
        animation.latent_interpolation_frames(nets, x, [0, 2])
    with pytest.raises(ValueError, match="at least one target domain"):
        animation.latent_interpolation_frames(nets, x, [])
    with pytest.raises(ValueError, match="num_styles=1"):
        animation.latent_interpolation_frames(nets, x, [0], num_styles=1)
    with pytest.raises(ValueError, match="frames_per_transition"):
        animation.latent_interpolation_frames(nets, x, [0], frames_per_transition=0)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        animation.write_latent_interpolation(nets, x, [0], tmp_path / "walk.avi")
    with pytest.raises(ValueError, match="out of range"):
        animation.write_latent_interpolation(nets, x, [5], tmp_path / "walk.gif")
    assert calls == [0] and list(tmp_path.iterdir()) == []


def test_latent_walk_mp4(nets: Networks, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    imageio = pytest.importorskip("imageio.v2")
    path = animation.write_latent_interpolation(nets, images(1, 16), [0, 1], tmp_path / "walk.mp4",
                                                num_styles=2, frames_per_transition=3, fps=10)
    with imageio.get_reader(path) as reader:
        assert reader.count_frames() == 12
        assert reader.get_meta_data()["size"] == (32, 16)


# ---------------------------------------------------------------- the file

def test_a_failed_write_keeps_the_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "walk.gif"
    path.write_bytes(b"the earlier animation")
    frame = np.zeros((8, 8, 3), np.uint8)

    def failing():
        yield frame
        raise RuntimeError("the model failed")

    with pytest.raises(RuntimeError, match="the model failed"):
        animation.write_animation(failing(), path)
    assert path.read_bytes() == b"the earlier animation" and [p.name for p in tmp_path.iterdir()] == ["walk.gif"]
    animation.write_animation([frame, frame], path)  # a complete one replaces it
    with Image.open(path) as gif:
        assert gif.n_frames == 2


def test_check_animation_path(tmp_path: Path) -> None:
    assert animation.check_animation_path(tmp_path / "a.GIF") is None
    with pytest.raises(ValueError, match=r"a\.png.*\.gif or \.mp4"):
        animation.check_animation_path(tmp_path / "a.png")
    (tmp_path / "b.gif").mkdir()
    with pytest.raises(ValueError, match="folder"):
        animation.check_animation_path(tmp_path / "b.gif")
