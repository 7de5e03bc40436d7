"""The page's handlers and the served model, without a browser."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan.api import Translator
from stargan.config import V1ModelConfig
from stargan.hub import LICENCE_PREFIX, RELEASES, release_licence
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.official import import_v1_official
from stargan.serve.model import ServedModel
from stargan.serve.page import Handlers


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> ServedModel:
    return ServedModel(tiny_run, device="cpu")


@pytest.fixture
def handlers(model: ServedModel, tmp_path: Path) -> Handlers:
    return Handlers(model, tmp_path)


def test_model_facts_and_examples(model: ServedModel, tiny_run: Path) -> None:
    assert model.arch == "v2" and model.domains == ("circle", "square", "triangle") and model.img_size == 16
    assert [e.label for e in model.examples] == ["circle/00000.png", "circle/00001.png", "square/00000.png",
                                                 "square/00001.png", "triangle/00000.png", "triangle/00001.png"]
    text = model.describe()
    assert "StarGAN v2" in text and "step 2" in text and "circle, square, triangle" in text
    assert "metrics" not in text and "licence" not in text


def test_describe_shows_metrics_and_licence(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(tiny_run / "checkpoints")
    (run / "metrics").mkdir()
    (run / "metrics" / "step-000002.json").write_text(json.dumps(
        {"latent": {"mean": {"fid": 12.5, "lpips": 0.25}}, "step": 2}))
    (run / "config.yaml").write_text(f"{LICENCE_PREFIX} CC BY-NC 4.0 (NAVER Corp.)\n")
    text = ServedModel(run).describe()
    assert "latent/fid 12.500" in text and "latent/lpips 0.250" in text
    assert "licence: CC BY-NC 4.0 (NAVER Corp.)" in text


def test_a_model_imported_from_a_released_file_has_its_licence() -> None:
    assert release_licence("official:stargan-v2-afhq-100000_nets_ema.ckpt") == RELEASES["afhq"].licence
    assert release_licence("official:100000_nets_ema.ckpt") == "" and release_licence("demo") == ""


def test_upload_translate_equals_the_translator(handlers: Handlers, tiny_run: Path, demo_data: Path) -> None:
    source_path = demo_data / "val" / "circle" / "00000.png"
    source, preview, status = handlers.upload(str(source_path), "source")
    assert status == f"source: {source_path.name} (16x16)"
    assert preview.size == (160, 160)  # enlarged for the page; the model gets the image itself
    gallery, status = handlers.translate(source, None, "square", [], "latent", 3, 7, 1.0)
    assert status == "3 image(s) of 16x16 px, target square"
    expected = Translator.load(tiny_run).translate(Image.open(source_path), "square", num_styles=3, seed=7)
    assert [caption for _, caption in gallery] == [f"style {k}, seed 7" for k in range(3)]
    assert all(np.array_equal(np.asarray(image), np.asarray(e)) for (image, _), e in zip(gallery, expected))


def test_reference_mode_and_gif(handlers: Handlers) -> None:
    source, _, _ = handlers.example("circle/00000.png", "source")
    ref_a, _, status = handlers.example("square/00000.png", "reference A")
    ref_b, _, _ = handlers.example("square/00001.png", "reference B")
    assert status == "reference A: example square/00000.png"
    gallery, status = handlers.translate(source, ref_a, "square", [], "reference", 4, 0, 1.0)
    assert len(gallery) == 1 and gallery[0][1] == "reference style"
    path, status = handlers.interpolate(source, ref_a, ref_b, "square")
    with Image.open(path) as gif:
        assert gif.n_frames == 24 and gif.size == (32, 16)  # source beside its translation


def test_bad_requests_become_messages(handlers: Handlers, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    image, preview, status = handlers.upload(str(text), "source")
    assert image is None and preview is None
    assert status.startswith("⚠️ notes.txt is not an image")
    assert handlers.translate(None, None, "square", [], "latent", 1, 0, 1.0)[1].startswith("⚠️ upload a source")
    source, _, _ = handlers.example("circle/00000.png", "source")
    assert "⚠️ reference mode" in handlers.translate(source, None, "square", [], "reference", 1, 0, 1.0)[1]
    assert "choose a target domain" in handlers.translate(source, None, "wolf", [], "latent", 1, 0, 1.0)[1]
    assert "between 1 and 8" in handlers.translate(source, None, "square", [], "latent", 50, 0, 1.0)[1]
    assert "unknown example" in handlers.example("../../etc/passwd", "source")[2]
    assert "needs a source and two references" in handlers.interpolate(source, None, None, "square")[1]


def test_time_limit_refuses_slow_requests(model: ServedModel, handlers: Handlers) -> None:
    source, _, _ = handlers.example("circle/00000.png", "source")
    limit = model.time_limit
    model.time_limit = model.seconds_per_image * 2.5
    try:
        gallery, status = handlers.translate(source, None, "square", [], "latent", 2, 0, 1.0)
        assert len(gallery) == 2 and status == "2 image(s) of 16x16 px, target square"
        gallery, status = handlers.translate(source, None, "square", [], "latent", 3, 0, 1.0)
        assert gallery is None and "above the server's limit" in status
    finally:
        model.time_limit = limit


def v1_run(tmp_path: Path, c_dim: int, names: tuple[str, ...]) -> Path:
    tmp_path.mkdir()
    torch.manual_seed(0)
    nets = build_v1_networks(V1ModelConfig(img_size=16, c_dim=c_dim, g_conv_dim=8, g_repeat_num=1),
                             with_discriminator=False)  # imported without D: the release's 128 px
    torch.save(nets.generator.state_dict(), tmp_path / "200000-G.ckpt")
    import_v1_official(tmp_path / "200000-G.ckpt", out_dir=tmp_path / "run", names=names)
    return tmp_path / "run"


def test_v1_domains_and_attributes(tmp_path: Path) -> None:
    folders = Handlers(ServedModel(v1_run(tmp_path / "a", 3, ("circle", "square", "triangle"))), tmp_path)
    assert folders.model.domains == ("circle", "square", "triangle") and folders.model.attributes == ()
    source = Image.new("RGB", (20, 20), "orange")
    gallery, status = folders.translate(source, None, "square", [], "latent", 4, 0, 1.0)
    assert len(gallery) == 1 and gallery[0][0].size == (128, 128) and status.endswith("target square")
    assert "needs a StarGAN v2 model" in folders.interpolate(source, source, source, "square")[1]

    attrs = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
    celeba = Handlers(ServedModel(v1_run(tmp_path / "b", 5, attrs)), tmp_path)
    assert celeba.model.domains == () and celeba.model.attributes == attrs
    blond, _ = celeba.translate(source, None, None, ["Blond_Hair", "Young"], "latent", 1, 0, 1.0)
    black, _ = celeba.translate(source, None, None, ["Black_Hair"], "latent", 1, 0, 1.0)
    assert blond[0][1] == "Blond_Hair+Young"
    assert not np.array_equal(np.asarray(blond[0][0]), np.asarray(black[0][0]))
    assert "unknown attributes ['Bald']" in celeba.translate(source, None, None, ["Bald"], "latent", 1, 0, 1.0)[1]


def test_file_names_are_shown_literally(handlers: Handlers, tmp_path: Path) -> None:
    path = tmp_path / "[click](http:evil)_*.png"
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    status = handlers.upload(str(path), "source")[2]
    assert status == r"source: \[click\]\(http:evil\)\_\*.png (4x4)"
