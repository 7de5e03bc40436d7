"""`stargan serve --backend onnx`: the served model and the page's handlers on an export folder, run by
ONNX Runtime (StarGAN v2 latent and reference styles; v1 domains and attributes), without a browser."""
from __future__ import annotations

import numpy as np
import pytest

from stargan.runtime import Translator
from stargan.serve.model import RequestError, ServedModel
from stargan.serve.page import Handlers
from tests.onnx_exports import exported, photo


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory) -> ServedModel:
    return ServedModel(exported("v2", tmp_path_factory)[1], backend="onnx")


def test_facts_and_description(v2_model: ServedModel) -> None:
    assert (v2_model.arch, v2_model.domains, v2_model.img_size) == ("v2", ("cat", "dog"), 16)
    assert v2_model.examples == [] and not v2_model.interpolates
    text = v2_model.describe()
    assert "StarGAN v2" in text and "ONNX export" in text and "cat, dog" in text and "step 0" in text
    assert "cpu (ONNX Runtime)" in text


def test_handlers_translate_as_the_runtime(v2_model: ServedModel, tmp_path) -> None:
    handlers = Handlers(v2_model, tmp_path)
    gallery, status = handlers.translate(photo(0), None, "dog", [], "latent", 3, 7, 1.0)
    assert status == "3 image(s) of 16x16 px, target dog"
    expected = Translator.load(v2_model.checkpoint).translate(photo(0), "dog", num_styles=3, seed=7)
    assert all(np.array_equal(np.asarray(image), np.asarray(e)) for (image, _), e in zip(gallery, expected))
    gallery, _ = handlers.translate(photo(0), photo(1), "cat", [], "reference", 4, 0, 1.0)
    assert len(gallery) == 1 and gallery[0][1] == "reference style"
    path, status = handlers.interpolate(photo(0), photo(1), photo(2), "cat")
    assert path is None and "torch backend" in status


def test_v1_exports_by_domain_and_by_attributes(tmp_path_factory) -> None:
    by_domain = ServedModel(exported("v1", tmp_path_factory)[1], backend="onnx")
    assert by_domain.domains == ("circle", "square", "star") and by_domain.attributes == ()
    assert by_domain.translate(photo(0), "star")[0].size == (16, 16)
    with pytest.raises(RequestError, match="choose a target domain"):
        by_domain.translate(photo(0), "cat")
    by_attributes = ServedModel(exported("v1_both", tmp_path_factory)[1], backend="onnx")
    assert by_attributes.attributes == ("Blond_Hair", "Male") and by_attributes.domains == ()
    assert by_attributes.translate(photo(0), attributes=("Male",))[0].size == (16, 16)
    with pytest.raises(RequestError, match="unknown attributes"):
        by_attributes.translate(photo(0), attributes=("Bald",))


def test_an_unknown_backend_is_refused(tmp_path_factory) -> None:
    with pytest.raises(ValueError, match="backend 'tflite'"):
        ServedModel(exported("v2", tmp_path_factory)[1], backend="tflite")


def test_the_serve_command_takes_the_backend() -> None:
    from stargan.cli import build_parser

    args = build_parser().parse_args(["serve", "exports/afhq", "--backend", "onnx"])
    assert (args.run, args.backend) == ("exports/afhq", "onnx")
