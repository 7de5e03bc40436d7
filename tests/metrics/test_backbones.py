import dataclasses
import hashlib

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from stargan.data.transforms import eval_transform
from stargan.metrics import backbones
from stargan.metrics.backbones import EXTRACTORS, build_extractor, clean_resize, describe, to_pixels
from stargan.metrics.evaluate import as_png
from stargan.metrics.weights import REGISTRY, WeightsError
from tests.metrics.calibrated import (as_batch, calibrate_batch_norms, calibration_batch, drawn_images,
                                     smooth_images)


def fake_weights(monkeypatch, tmp_path, key, state):
    """Save ``state`` and point the registry entry ``key`` at a name carrying its hash prefix."""
    path = tmp_path / f"{key}.pth"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(REGISTRY[key], filename=f"fake-{digest[:8]}.pth", sha256=None)
    monkeypatch.setitem(REGISTRY, key, spec)
    return path, digest


@pytest.mark.parametrize("name", EXTRACTORS)
def test_random_init_extractors_give_2048_features(name):
    extractor = build_extractor(name, img_size=32, random_init=True)
    features = extractor(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert extractor.feature_dim == 2048 and extractor.name == name
    assert describe(extractor)["weights_sha256"] == "random-init"
    assert name in extractor.protocol
    assert not extractor.train().training
    assert not any(p.requires_grad for p in extractor.parameters())


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_extractor("inception-torchvision", 32, random_init=True)
    b = build_extractor("inception-torchvision", 32, random_init=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def pil_reference(pixels: torch.Tensor, size: int) -> np.ndarray:
    out = np.zeros((pixels.shape[0], 3, size, size), dtype=np.float32)
    for b in range(pixels.shape[0]):
        for c in range(3):
            channel = Image.fromarray(pixels[b, c].numpy().astype(np.float32))  # mode "F"
            out[b, c] = np.asarray(channel.resize((size, size), Image.BICUBIC)).clip(0, 255)
    return out


def test_clean_resize_equals_per_channel_pil_bicubic():
    pixels = torch.rand(2, 3, 23, 23, generator=torch.Generator().manual_seed(0)) * 255
    y = clean_resize(pixels, size=41)
    assert y.shape == (2, 3, 41, 41) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), pil_reference(pixels, 41))


def test_clean_resize_does_not_quantise():
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    np.testing.assert_array_equal(clean_resize(pixels, size=16).numpy(), pixels.numpy())


def test_8bit_images_reach_the_resize_as_exact_levels():
    """A PNG through eval_transform and an as_png output hold 8-bit levels that float32 [-1, 1] cannot
    represent exactly; to_pixels gives the levels themselves, as clean-fid reads them from the file."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    png = eval_transform(Image.fromarray(levels[0].permute(1, 2, 0).numpy()), 16)[None]
    rounded = as_png(levels.float() / 127.5 - 1)
    assert not torch.equal((png + 1) * 127.5, levels.float())  # what the naive inverse gives
    for x in (png, rounded):
        assert torch.equal(to_pixels(x), levels.float())
    smooth = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(to_pixels(smooth), (smooth + 1) * 127.5, rtol=0, atol=2e-5)


def test_inception_tf_input_is_the_tf_graphs_scaling_of_clean_resized_pixels():
    extractor = build_extractor("inception-tf", img_size=32, random_init=True)
    x = as_png(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1)
    expected = (clean_resize(to_pixels(x)) - 128) / 128
    assert torch.equal(extractor.preprocess(x), expected)
    assert "(x - 128) / 128" in extractor.protocol and "clean-fid" in extractor.protocol


def test_torchvision_file_with_aux_logits_loads(monkeypatch, tmp_path):
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = net.state_dict()
    assert any(k.startswith("AuxLogits.") for k in state)  # what the released file holds
    path, digest = fake_weights(monkeypatch, tmp_path, "inception-torchvision", state)
    extractor = build_extractor("inception-torchvision", 64, weights=str(path), fold=False)  # as loaded
    assert extractor.weights_sha256 == digest
    key = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(extractor.net.get_parameter(key), state[key])
    assert isinstance(extractor.net.fc, torch.nn.Identity)


def test_tf_file_loads_and_a_wrong_file_is_refused(monkeypatch, tmp_path):
    state = backbones._tf_inception_network().state_dict()
    assert state["fc.weight"].shape == (1008, 2048)
    path, digest = fake_weights(monkeypatch, tmp_path, "inception-tf", state)
    extractor = build_extractor("inception-tf", 64, weights=str(path), fold=False)  # as loaded
    assert extractor.weights_sha256 == digest
    key = "Mixed_5b.branch_pool.conv.weight"  # a patched FID block
    assert torch.equal(extractor.net.get_parameter(key), state[key])

    state["fc.weight"] = state["fc.weight"][:1000]  # torchvision's 1000 classes instead of TF's 1008
    path, _ = fake_weights(monkeypatch, tmp_path, "inception-tf", state)
    with pytest.raises(WeightsError, match="does not fit the inception-tf network"):
        build_extractor("inception-tf", 64, weights=str(path))


def test_missing_weights_raise_weights_error():
    with pytest.raises(WeightsError, match="inception_v3_google-0cc3c7bd.pth"):
        build_extractor("inception-torchvision", 64)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="inception-tf, inception-torchvision"):
        build_extractor("vgg", 64, random_init=True)


def test_bad_inputs_are_refused_before_running():
    extractor = build_extractor("inception-torchvision", 32, random_init=True)
    for shape in [(2, 1, 32, 32), (2, 3, 32, 16), (0, 3, 32, 32), (3, 32, 32)]:
        with pytest.raises(ValueError, match="inception-torchvision"):
            extractor(torch.zeros(shape))


@pytest.mark.parametrize("name", EXTRACTORS)
def test_folded_batch_norms_give_the_same_features(name):
    """fold_batch_norms (conv+BN folded, channels_last) computes the network as loaded up to rounding.

    Measured with batch norms calibrated on real-looking images (activations of a trained network's
    scale; uncalibrated random features are ~1e-8 and hide the rounding): 1.1e-5 relative over these
    images, 2.8e-5 for the worst one (inception-tf; 1.0e-5 and 2.9e-5 for inception-torchvision).
    The FID moves by 2e-6 relative (tests/metrics/test_reference_libraries.py).
    """
    import copy

    from stargan.metrics import backbones

    plain = build_extractor(name, img_size=64, random_init=True, fold=False)
    calibrate_batch_norms(plain.net, plain.preprocess(calibration_batch()))
    folded = copy.deepcopy(plain)
    backbones.fold_batch_norms(folded.net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.net.modules())
    x = as_batch(drawn_images(3, "circle", 64, seed=7) + smooth_images(3, 64, seed=7))
    a, b = folded(x), plain(x)
    assert 0.1 < b.mean().item() < 10  # the scale of a trained network's pool3 features
    assert ((a - b).norm() / b.norm()).item() < 1e-4
    assert ((a - b).norm(dim=1) / b.norm(dim=1)).max().item() < 1e-4


def test_a_batch_runs_in_chunks_on_the_cpu_with_the_same_features(monkeypatch):
    """eval hands over inputs x outputs images at once; the extractor runs them cpu_chunk at a time, in
    order, and returns what one pass over the whole batch returns."""
    extractor = build_extractor("inception-tf", img_size=32, random_init=True)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    extractor.cpu_chunk = 5
    whole = extractor(x)
    sizes = []
    features = extractor.features
    monkeypatch.setattr(extractor, "features", lambda part: sizes.append(part.size(0)) or features(part))
    extractor.cpu_chunk = 2
    chunked = extractor(x)
    assert sizes == [2, 2, 1]
    assert chunked.shape == (5, 2048)
    assert ((chunked - whole).norm() / whole.norm()).item() < 1e-6
    assert ((chunked[4] - whole[4]).norm() / whole[4].norm()).item() < 1e-6  # the last image stays last
