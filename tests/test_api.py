from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stargan.checkpoints
from stargan.api import Translator
from stargan.config import Config, DataConfig
from stargan.nets.v2 import Networks, build_networks
from tests import tiny

MODEL = tiny.v2_model()
CONFIG = Config(model=MODEL, data=DataConfig(domains=("cat", "dog")))


def tiny_nets() -> Networks:
    torch.manual_seed(0)
    return build_networks(MODEL, with_discriminator=False)


def photo(seed: int = 0, size: tuple[int, int] = (40, 30), mode: str = "RGBA") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA").convert(mode)


@pytest.fixture
def translator() -> Translator:
    return Translator(CONFIG, tiny_nets())


def pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_domains_and_unknown_domain(translator: Translator) -> None:
    assert translator.domains == ("cat", "dog")
    with pytest.raises(ValueError, match="unknown domain 'wolf'.*cat, dog"):
        translator.translate(photo(), domain="wolf")


def test_latent_translation_count_size_and_seed(translator: Translator) -> None:
    out = translator.translate(photo(), domain="dog", num_styles=3, seed=0)
    assert len(out) == 3
    assert all(im.size == (16, 16) and im.mode == "RGB" for im in out)
    again = translator.translate(photo(), domain="dog", num_styles=3, seed=0)
    other = translator.translate(photo(), domain="dog", num_styles=3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(out), pixels(again)))
    assert not np.array_equal(pixels(out)[0], pixels(other)[0])
    assert not np.array_equal(pixels(out)[0], pixels(out)[1])  # distinct styles
    truncated = translator.translate(photo(), domain="dog", num_styles=2, seed=0, psi=0.0)
    assert np.array_equal(*pixels(truncated))  # psi = 0: both collapse to the mean style


def test_reference_translation(translator: Translator, tmp_path: Path) -> None:
    ref_path = tmp_path / "ref.png"
    photo(seed=5, mode="RGB").save(ref_path)
    out = translator.translate(photo(mode="RGB"), domain="cat", reference=ref_path)
    assert len(out) == 1 and out[0].size == (16, 16)
    # Same as the networks applied by hand to the preprocessed images.
    x = _preprocess(photo(mode="RGB"))
    ref = _preprocess(Image.open(ref_path))
    nets = translator.nets
    with torch.no_grad():
        expected = nets.generator(x, nets.style_encoder(ref, torch.tensor([0])))[0]
    expected = ((expected + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0)
    assert np.abs(np.asarray(out[0]).astype(int) - expected.numpy().astype(int)).max() <= 1
    with pytest.raises(ValueError, match="num_styles"):
        translator.translate(photo(), domain="cat", reference=ref_path, num_styles=2)


def _preprocess(image: Image.Image) -> torch.Tensor:
    rgb = np.asarray(image.convert("RGB").resize((16, 16), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1


def test_load_uses_checkpoints_lazily(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake_load(path, device):
        calls.append((path, device))
        return CONFIG, tiny_nets()

    monkeypatch.setattr(stargan.checkpoints, "load_for_sampling", fake_load)
    translator = Translator.load(tmp_path, device="cpu")
    assert calls == [(tmp_path, "cpu")]
    assert translator.domains == ("cat", "dog")
    assert len(translator.translate(photo(), domain="cat", seed=0)) == 1


def test_domain_names_must_match_the_model() -> None:
    with pytest.raises(ValueError, match="num_domains=2"):
        Translator(Config(model=MODEL, data=DataConfig(domains=("cat",))), tiny_nets())


def test_interpolate_writes_gif(translator: Translator, tmp_path: Path) -> None:
    refs = [photo(seed=1), photo(seed=2), photo(seed=3)]
    path = translator.interpolate(photo(), refs, ["cat", "dog", "dog"], tmp_path / "interp.gif",
                                  frames_per_transition=2, fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 6 and gif.size == (32, 16)
    with pytest.raises(ValueError, match="3 references but 2 domains"):
        translator.interpolate(photo(), refs, ["cat", "dog"], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="unknown domain"):
        translator.interpolate(photo(), refs, "wolf", tmp_path / "x.gif")


def test_interpolate_latent_walks_through_the_translations_styles(translator: Translator,
                                                                    tmp_path: Path) -> None:
    path = translator.interpolate_latent(photo(), tmp_path / "all.gif", num_styles=2, frames_per_transition=3,
                                         seed=4, fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 2 * 2 * 3 and gif.size == (32, 16)  # every domain by default
        gif.seek(2 * 3)  # the first frame of the walk in "dog"
        first_dog = np.asarray(gif.convert("RGB"))[:, 16:].astype(int)
    dog = np.asarray(translator.translate(photo(), "dog", num_styles=2, seed=4)[0]).astype(int)
    assert np.abs(first_dog - dog).mean() < 12  # palette quantisation only
    with Image.open(translator.interpolate_latent(photo(), tmp_path / "dog.gif", domains="dog",
                                                  num_styles=3, frames_per_transition=2)) as gif:
        assert gif.n_frames == 3 * 2
    with pytest.raises(ValueError, match="unknown domain 'wolf'; valid domains: cat, dog"):
        translator.interpolate_latent(photo(), tmp_path / "x.gif", domains=["dog", "wolf"])
    assert not (tmp_path / "x.gif").exists()


def test_opened_images_and_files_give_the_same_translation(translator: Translator, tmp_path: Path) -> None:
    """An opened image passes the same gate as a file: alpha over black, EXIF orientation, checks."""
    photo(seed=7).save(tmp_path / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo(seed=8, mode="RGB").save(tmp_path / "rotated.jpg", exif=exif)
    for name in ("rgba.png", "rotated.jpg"):
        with Image.open(tmp_path / name) as opened:
            from_image = translator.translate(opened, domain="dog", seed=0)[0]
        from_file = translator.translate(tmp_path / name, domain="dog", seed=0)[0]
        assert np.array_equal(np.asarray(from_image), np.asarray(from_file)), name
    (tmp_path / "cut.png").write_bytes((tmp_path / "rgba.png").read_bytes()[:200])
    with Image.open(tmp_path / "cut.png") as opened, pytest.raises(ValueError, match="cannot use the image"):
        translator.translate(opened, domain="dog")
    with pytest.raises(ValueError, match=r"cannot read image .*cut.png.*truncated"):
        translator.translate(tmp_path / "cut.png", domain="dog")


def test_a_w_hpf_model_translates_with_fan_masks_or_not_at_all(face_files, monkeypatch):
    from dataclasses import replace

    from stargan.faces import FAN
    from stargan.metrics.weights import WeightsError

    config = replace(CONFIG, model=replace(MODEL, img_size=32, w_hpf=1.0))  # masks act from 32 px up
    torch.manual_seed(0)
    nets = build_networks(config.model, with_discriminator=False)
    calls = []

    def cheap_masks(self, x):  # the FAN is tested in tests/faces; here: the translator asks for masks
        calls.append(tuple(x.shape))
        return torch.ones(x.size(0), 1, 256, 256), torch.ones(x.size(0), 1, 256, 256)

    monkeypatch.setattr(FAN, "get_heatmap", cheap_masks)
    masked = Translator(config, nets).translate(photo(), "dog", num_styles=2, seed=0)
    assert calls == [(1, 3, 32, 32)]  # one source, masked once for its 2 styles
    off = Translator(replace(config, model=replace(config.model, masks=False)), nets)
    plain = off.translate(photo(), "dog", num_styles=2, seed=0)
    assert off.mask_fn is None and calls == [(1, 3, 32, 32)]
    assert not np.array_equal(pixels(masked)[0], pixels(plain)[0])
    for name in ("wing.ckpt", "wing.safetensors"):   # the release file and the copy the first load cached
        (face_files / name).unlink()
    with pytest.raises(WeightsError, match="wing.ckpt not found"):
        Translator(config, nets)
