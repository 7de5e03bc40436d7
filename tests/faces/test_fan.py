"""FAN: the released layout (every state_dict key and shape), CoordConv channels, and the batched,
eval-mode, gradient-free, dtype-agnostic get_heatmap / get_landmark on random weights."""
from __future__ import annotations

import copy

import pytest
import torch

from stargan.faces import FAN
from stargan.faces.fan import ConvBlock, coordinates
from stargan.faces.heatmaps import landmarks_from_heatmaps, masks_from_heatmaps
from tests.reference_keys import read_key_file
from tests.release_fixtures import random_fan


@pytest.fixture(scope="module")
def fan() -> FAN:
    return random_fan()


def test_state_dict_equals_the_released_keys_and_shapes_in_order():
    released = read_key_file("fan_wing_state_dict_keys.tsv")
    assert list(released) == [""] and list(released[""]) == ["fan"]
    fan = released[""]["fan"]
    assert (len(fan.keys), fan.tensors, fan.params) == (336, 336, 6_333_603)
    assert [(k, tuple(v.shape)) for k, v in FAN().state_dict().items()] == list(fan.keys.items())
    assert sum(p.numel() for p in FAN().parameters()) == fan.params


def test_coordinate_channels():
    c = coordinates(torch.zeros(2, 5, 3, 4, dtype=torch.float64))
    assert c.shape == (2, 3, 3, 4)
    assert c[0, 0, :, 0].tolist() == [-1, 0, 1]             # xx varies along the height
    assert c[0, 1, 0, :].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # yy along the width
    assert c[0, 2].max().item() == 1.0                      # radius divided by its maximum
    assert c[0, 2, 1, 0].item() == pytest.approx(1 / 2 ** 0.5)


@pytest.mark.parametrize("out_channels", [8, 16])
def test_conv_block_concatenates_three_branches_plus_the_residual(out_channels):
    torch.manual_seed(0)
    block = ConvBlock(8, out_channels).eval()
    assert (block.downsample is None) == (out_channels == 8)   # a projection only where widths differ
    widths = [conv.out_channels for conv in (block.conv1, block.conv2, block.conv3)]
    assert widths == [out_channels // 2, out_channels // 4, out_channels // 4]
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        out = block(x)
        residual = x if block.downsample is None else block.downsample(x)
        block.conv3.weight.zero_()             # the third branch (the last quarter of the channels) is 0
        third_off = block(x)
        block.conv1.weight.zero_()             # and now all three: only the residual is left
        all_off = block(x)
    assert out.shape == (1, out_channels, 6, 6)
    torch.testing.assert_close(third_off[:, :-widths[2]], out[:, :-widths[2]])
    torch.testing.assert_close(third_off[:, -widths[2]:], residual[:, -widths[2]:])
    torch.testing.assert_close(all_off, residual)
    assert not torch.allclose(out, residual)


def test_forward_gives_99_heatmaps_at_a_quarter_of_the_input(fan):
    assert fan(torch.rand(1, 3, 256, 256)).shape == (1, 99, 64, 64)


def test_always_eval_and_without_gradients(fan):
    fan.train()
    assert not fan.training and not any(m.training for m in fan.modules())
    assert not any(p.requires_grad for p in fan.parameters())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    coarse, fine = fan.get_heatmap(x * 2 - 1)
    assert not coarse.requires_grad and not fine.requires_grad


def test_get_heatmap_is_batched_and_resizes_any_square_input(fan):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    coarse, fine = fan.get_heatmap(x)
    assert coarse.shape == fine.shape == (2, 1, 256, 256)
    assert 0 <= coarse.min() and coarse.max() <= 1 and 0 <= fine.min() and fine.max() <= 1
    one_coarse, one_fine = fan.get_heatmap(x[1:2])
    torch.testing.assert_close(one_coarse, coarse[1:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(one_fine, fine[1:2], rtol=0, atol=1e-5)
    # The same as resizing then mapping to [0, 1] by hand and running the network.
    resized = torch.nn.functional.interpolate(x, size=256, mode="bilinear", align_corners=False)
    heatmaps = fan(resized * 0.5 + 0.5)[:, :98]
    expected = masks_from_heatmaps(heatmaps)
    torch.testing.assert_close(coarse, expected[0])
    torch.testing.assert_close(fine, expected[1])
    landmarks = fan.get_landmark(x)
    assert landmarks.shape == (2, 98, 2)
    torch.testing.assert_close(landmarks, landmarks_from_heatmaps(heatmaps, 128))


def test_rejects_non_square_images(fan):
    with pytest.raises(ValueError, match="H = W"):
        fan.get_heatmap(torch.zeros(1, 3, 64, 32))


def test_float64_network_agrees_with_float32_and_returns_the_input_dtype():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    f32 = random_fan(3)
    f64 = copy.deepcopy(f32).double()
    h32 = f32.landmark_heatmaps(x)
    h64 = f64.landmark_heatmaps(x.double())
    assert h64.dtype == torch.float64
    torch.testing.assert_close(h32.double(), h64, rtol=1e-3, atol=1e-3)
    coarse, _ = f64.get_heatmap(x)          # float32 images through a float64 network
    assert coarse.dtype == torch.float32
