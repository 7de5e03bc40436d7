import random

import numpy as np
import pytest
import torch
from PIL import Image

from stargan.data import eval_transform, to_pil, train_transform
from stargan.data.transforms import crop_params


def gradient_image(width=40, height=30) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).round().astype(np.uint8))


def left_right_image(size=16) -> Image.Image:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:, : size // 2] = (255, 0, 0)
    pixels[:, size // 2:] = (0, 0, 255)
    return Image.fromarray(pixels)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("crop_prob", [0.0, 0.5, 1.0])
def test_train_transform_shape_range_dtype(crop_prob):
    x = train_transform(gradient_image(), 24, gen(0), crop_prob)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.9 and x.max() > 0.9          # the full range is used, not [0, 1]


def test_eval_transform_shape_range_and_inverse():
    img = gradient_image(20, 20)
    x = eval_transform(img, 20)
    assert x.shape == (3, 20, 20) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(np.asarray(to_pil(x)), np.asarray(img))
    assert eval_transform(gradient_image(), 8).shape == (3, 8, 8)    # non-square input is squashed
    assert eval_transform(img.convert("L"), 8).shape == (3, 8, 8)


def test_to_pil_clamps_and_checks_shape():
    t = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 5).expand(3, 1, 5)
    assert np.asarray(to_pil(t))[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_pil(torch.zeros(1, 3, 4, 4))


def test_train_transform_is_a_function_of_the_generator_seed():
    img = gradient_image(32, 32)
    a = [train_transform(img, 16, gen(s), 0.5) for s in range(8)]
    b = [train_transform(img, 16, gen(s), 0.5) for s in range(8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({x.numpy().tobytes() for x in a}) > 4     # different seeds give different augmentations


def test_global_rng_untouched():
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    for s in range(10):
        train_transform(gradient_image(), 16, gen(s), crop_prob=1.0)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])


def test_no_crop_gives_the_image_or_its_mirror_half_the_time():
    img = left_right_image()
    plain = eval_transform(img, 16)
    mirror = plain.flip(-1)
    flips = 0
    for s in range(60):
        x = train_transform(img, 16, gen(s), crop_prob=0.0)
        assert torch.equal(x, plain) or torch.equal(x, mirror)
        flips += torch.equal(x, mirror)
    assert 15 <= flips <= 45
    assert torch.equal(mirror[0, :, 0], torch.full((16,), -1.0))   # mirrored: blue on the left


def test_crop_changes_the_image():
    img = gradient_image(32, 32)
    plain = eval_transform(img, 32)
    outputs = [train_transform(img, 32, gen(s), crop_prob=1.0) for s in range(10)]
    cropped = [x for x in outputs if not (torch.equal(x, plain) or torch.equal(x, plain.flip(-1)))]
    assert len(cropped) >= 8


def test_crop_params_within_ranges():
    g = gen(0)
    for _ in range(200):
        top, left, h, w = crop_params(100, 80, g)
        assert 0.8 * 8000 * 0.97 <= h * w <= 8000
        assert 0.9 * 0.97 <= w / h <= 1.1 * 1.03
        assert 0 <= top <= 80 - h and 0 <= left <= 100 - w
    # A very wide image cannot fit the ratio range: fall back to a central crop.
    top, left, h, w = crop_params(200, 10, g)
    assert (top, h) == (0, 10) and w == 11 and left == (200 - 11) // 2
