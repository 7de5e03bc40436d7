"""stargan.runtime: the ONNX Translator takes and gives images as stargan.api.Translator does (same
preprocessing, same 8-bit conversion, outputs within one level), refuses what it cannot do with a message,
and runs behind `stargan translate --backend onnx`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from stargan import api, runtime
from stargan.checkpoints import load_for_sampling
from stargan.cli import main
from stargan.data.images import load_rgb, rgb_image
from stargan.data.transforms import eval_transform, to_pil
from stargan.data.v1 import transform as v1_transform
from stargan.runtime import ExportError, ImageError, Translator, images
from tests.onnx_exports import exported, photo


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


# ------------------------------------------------------------------------------------------------
# Images in and out

def odd_images() -> dict[str, Image.Image]:
    rgba = photo(1).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    grey16 = Image.fromarray((np.arange(47 * 40).reshape(40, 47) * 30).astype(np.uint16))
    return {"RGB": photo(0), "RGBA": rgba, "L": photo(2).convert("L"), "P": photo(3).convert("P"),
            "I;16": grey16, "square": photo(4).resize((16, 16)), "large": photo(5, size=300)}


@pytest.mark.parametrize("name", list(odd_images()))
def test_preprocessing_is_eval_transforms(name):
    image = odd_images()[name]
    expected = eval_transform(rgb_image(image), 16)[None].numpy()
    np.testing.assert_allclose(runtime.to_array(image, 16), expected, atol=1e-6, rtol=0)


def test_v1_preprocessing_crops_as_v1_transform():
    for image, crop in ((photo(0, size=60), 50), (photo(1), 178)):  # 178 does not fit: no crop
        expected = v1_transform(image, 16, crop, flip=False)[None].numpy()
        np.testing.assert_allclose(runtime.to_array(image, 16, crop), expected, atol=1e-6, rtol=0)


def test_outputs_become_8_bits_as_to_pil():
    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(1, 3, 8, 8)
    np.testing.assert_array_equal(pixels(runtime.to_images(x.numpy())[0]), pixels(to_pil(x[0])))


def test_files_decode_as_load_rgb(tmp_path):
    files = {}
    for name, image in odd_images().items():
        files[name] = tmp_path / f"{name.replace(';', '')}.png"
        image.save(files[name])
    rotated = photo(6)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotated: the pixels are shown turned by 90 degrees
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    frames = [photo(7), photo(8)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for path in [*files.values(), tmp_path / "rotated.jpg", tmp_path / "anim.gif"]:
        np.testing.assert_array_equal(pixels(runtime.load_image(path)), pixels(load_rgb(path)))


def test_unusable_images_are_refused_by_name(tmp_path, monkeypatch):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        runtime.load_image(tmp_path / "broken.jpg")
    photo(0).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="big.png: 47x40 pixels"):
        runtime.load_image(tmp_path / "big.png")


# ------------------------------------------------------------------------------------------------
# Translation, against the torch Translator

@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    run, folder = exported("v2", tmp_path_factory)
    config, nets = load_for_sampling(run)
    return api.Translator(config, nets), Translator.load(folder, threads=1)


def test_latent_translation_is_the_torch_translators(v2):
    torch_translator, onnx_translator = v2
    expected = torch_translator.translate(photo(0), "dog", num_styles=3, seed=7)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))  # the torch Translator's codes
    got = onnx_translator.translate(photo(0), "dog", z=z.numpy())
    assert [im.size for im in got] == [(16, 16)] * 3
    assert max(np.abs(pixels(a) - pixels(b)).max() for a, b in zip(got, expected)) <= 1


def test_reference_translation_is_the_torch_translators(v2, tmp_path):
    torch_translator, onnx_translator = v2
    photo(9).save(tmp_path / "ref.png")
    expected = torch_translator.translate(photo(0), "cat", reference=tmp_path / "ref.png")
    got = onnx_translator.translate(photo(0), "cat", reference=tmp_path / "ref.png")
    assert len(got) == 1 and np.abs(pixels(got[0]) - pixels(expected[0])).max() <= 1


def test_seeds_and_psi(v2):
    _, translator = v2
    first = [pixels(im) for im in translator.translate(photo(0), "dog", num_styles=2, seed=0)]
    again = [pixels(im) for im in translator.translate(photo(0), "dog", num_styles=2, seed=0)]
    other = [pixels(im) for im in translator.translate(photo(0), "dog", num_styles=2, seed=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[0], first[1])
    mean = translator.translate(photo(0), "dog", num_styles=2, seed=0, psi=0.0)
    assert np.array_equal(pixels(mean[0]), pixels(mean[1]))  # psi = 0: the domain's mean style


def test_api_loads_an_export_with_the_onnx_backend(tmp_path_factory):
    _, folder = exported("v2", tmp_path_factory)
    translator = api.Translator.load(folder, backend="onnx")
    assert isinstance(translator, Translator) and translator.domains == ("cat", "dog")
    with pytest.raises(ValueError, match="chosen when a model is exported"):
        api.Translator.load(folder, backend="onnx", masks=False)
    with pytest.raises(ValueError, match="backend 'tflite'"):
        api.Translator.load(folder, backend="tflite")


def test_requests_it_cannot_do_are_refused(v2, tmp_path_factory):
    _, translator = v2
    for call, message in [
        (lambda: translator.translate(photo(0), "wolf"), "unknown domain 'wolf'; valid domains: cat, dog"),
        (lambda: translator.translate(photo(0), "dog", num_styles=2, reference=photo(1)), "exactly one style"),
        (lambda: translator.translate(photo(0), "dog", num_styles=2, z=np.zeros((3, 4))), "z holds 3 codes"),
        (lambda: translator.translate(photo(0), "dog", attributes=["Male"]), "StarGAN v1"),
        (lambda: translator.translate(photo(0), "dog", reference=photo(1), psi=0.5), "psi=0.5 only applies"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    _, v1_folder = exported("v1", tmp_path_factory)
    with pytest.raises(ValueError, match="StarGAN v2 options"):
        Translator.load(v1_folder).translate(photo(0), "star", num_styles=2)
    with pytest.raises(ValueError, match="valid domains: circle, square, star"):
        Translator.load(v1_folder).translate(photo(0), "cat")


def test_what_is_not_an_export_is_refused(tmp_path, tmp_path_factory):
    run, folder = exported("v2", tmp_path_factory)
    with pytest.raises(ExportError, match="export it first with `stargan export"):
        Translator.load(run)
    with pytest.raises(ValueError, match="stargan.api.Translator.load"):
        Translator.load(folder, backend="torch")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "style_encoder.onnx").unlink()
    with pytest.raises(ExportError, match=r"\['style_encoder.onnx'\] missing"):
        Translator.load(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(ExportError, match="not a stargan ONNX manifest"):
        Translator.load(broken)


# ------------------------------------------------------------------------------------------------
# `stargan translate --backend onnx`

def test_translate_command_with_an_export(tmp_path, tmp_path_factory, capsys):
    _, folder = exported("v2", tmp_path_factory)
    photo(0).save(tmp_path / "in.png")
    photo(1).save(tmp_path / "ref.png")
    common = [str(folder), "--backend", "onnx", "--input", str(tmp_path / "in.png"), "--threads", "1"]
    assert main(["translate", *common, "--domain", "dog", "--num-styles", "2", "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["in_dog_style0.png", "in_dog_style1.png"]
    assert main(["translate", *common, "--domain", "cat", "--reference", str(tmp_path / "ref.png"),
                 "--out", str(tmp_path / "b")]) == 0
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["in_cat.png"]
    capsys.readouterr()
    assert main(["translate", *common, "--domain", "dog", "--no-masks", "--out", str(tmp_path / "c")]) == 2
    assert "chosen when a model is exported" in capsys.readouterr().err


@pytest.mark.parametrize("kind, domain, name", [("v1", "square", "in_square.png"),
                                                ("v1_both", "Blond_Hair,Male", "in_Blond_Hair+Male.png"),
                                                ("v1_both", "happy", "in_happy.png")])
def test_translate_command_with_a_v1_export(kind, domain, name, tmp_path, tmp_path_factory):
    _, folder = exported(kind, tmp_path_factory)
    photo(0).save(tmp_path / "in.png")
    assert main(["translate", str(folder), "--backend", "onnx", "--input", str(tmp_path / "in.png"),
                 "--domain", domain, "--out", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
    target = {"domain": domain} if "," not in domain else {"attributes": domain.split(",")}
    expected = Translator.load(folder).translate(photo(0), **target)[0]
    np.testing.assert_array_equal(pixels(Image.open(tmp_path / "out" / name)), pixels(expected))
