"""Building blocks checked against the paper's equations written out with functional ops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stargan.nets.blocks import AdaIN, AdainResBlk, HighPass, ResBlk


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (affine norms included), so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.2 * x)


def _conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)


def _affine_norm(x: torch.Tensor, norm: torch.nn.InstanceNorm2d) -> torch.Tensor:
    return _instance_norm(x) * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def _pool(x: torch.Tensor) -> torch.Tensor:  # 2x2 mean, by reshaping
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def _upsample(x: torch.Tensor) -> torch.Tensor:  # nearest 2x, by repeating
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


@pytest.mark.parametrize("dim_in, dim_out, normalize, downsample", [
    (4, 4, False, False), (4, 6, False, True), (4, 6, True, True), (5, 5, True, False)])
def test_resblk_is_shortcut_plus_residual_over_sqrt2(dim_in, dim_out, normalize, downsample):
    blk = ResBlk(dim_in, dim_out, normalize=normalize, downsample=downsample)
    _randomise(blk)
    x = torch.randn(2, dim_in, 8, 8)

    sc = x
    if dim_in != dim_out:
        sc = F.conv2d(sc, blk.conv1x1.weight)
    if downsample:
        sc = _pool(sc)
    h = _affine_norm(x, blk.norm1) if normalize else x
    h = _conv(_lrelu(h), blk.conv1)
    if downsample:
        h = _pool(h)
    if normalize:
        h = _affine_norm(h, blk.norm2)
    h = _conv(_lrelu(h), blk.conv2)
    expected = (sc + h) / math.sqrt(2)

    out = blk(x)
    assert out.shape == (2, dim_out, 4 if downsample else 8, 4 if downsample else 8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert hasattr(blk, "conv1x1") == (dim_in != dim_out)
    assert hasattr(blk, "norm1") == normalize


def test_resblk_conv1x1_has_no_bias_like_the_released_models():
    assert ResBlk(4, 8).conv1x1.bias is None


def test_adain_is_one_plus_gamma_times_instance_norm_plus_beta():
    torch.manual_seed(0)
    ada = AdaIN(style_dim=3, num_features=4)
    _randomise(ada)
    x = torch.randn(2, 4, 5, 5) * 3 + 1
    s = torch.randn(2, 3)
    h = s @ ada.fc.weight.T + ada.fc.bias          # [2, 8]
    gamma, beta = h[:, :4, None, None], h[:, 4:, None, None]
    expected = (1 + gamma) * _instance_norm(x) + beta
    torch.testing.assert_close(ada(x, s), expected, rtol=1e-5, atol=1e-5)


def test_adain_with_zero_style_layer_is_plain_instance_norm():
    ada = AdaIN(style_dim=3, num_features=2)
    torch.nn.init.zeros_(ada.fc.weight)
    torch.nn.init.zeros_(ada.fc.bias)
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [2.0, 4.0]]]])
    out = ada(x, torch.randn(1, 3))
    # channel 0: mean 4, var 5 -> (x - 4) / sqrt(5 + eps)
    torch.testing.assert_close(out[0, 0], (x[0, 0] - 4) / math.sqrt(5 + 1e-5))
    # channel 1: mean 2.5, var 0.75
    torch.testing.assert_close(out[0, 1], (x[0, 1] - 2.5) / math.sqrt(0.75 + 1e-5))


def _adain(x, s, ada):
    h = s @ ada.fc.weight.T + ada.fc.bias
    c = x.size(1)
    return (1 + h[:, :c, None, None]) * _instance_norm(x) + h[:, c:, None, None]


@pytest.mark.parametrize("dim_in, dim_out, upsample", [(4, 4, False), (6, 4, True)])
@pytest.mark.parametrize("w_hpf", [0.0, 1.0])
def test_adain_resblk_by_hand(dim_in, dim_out, upsample, w_hpf):
    blk = AdainResBlk(dim_in, dim_out, style_dim=3, w_hpf=w_hpf, upsample=upsample)
    _randomise(blk, seed=1)
    x = torch.randn(2, dim_in, 4, 4)
    s = torch.randn(2, 3)

    h = _lrelu(_adain(x, s, blk.norm1))
    if upsample:
        h = _upsample(h)
    h = _conv(h, blk.conv1)
    h = _conv(_lrelu(_adain(h, s, blk.norm2)), blk.conv2)
    sc = _upsample(x) if upsample else x
    if dim_in != dim_out:
        sc = F.conv2d(sc, blk.conv1x1.weight)
    # with w_hpf > 0 the skip is dropped: the output is the residual alone
    expected = h if w_hpf > 0 else (h + sc) / math.sqrt(2)

    out = blk(x, s)
    size = 8 if upsample else 4
    assert out.shape == (2, dim_out, size, size)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w_hpf", [1.0, 2.0, 0.5])
def test_highpass_is_depthwise_laplacian_over_w_hpf(w_hpf):
    hpf = HighPass(w_hpf)
    kernel = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])
    torch.testing.assert_close(hpf.filter, kernel / w_hpf)
    assert "filter" in dict(hpf.named_buffers()) and not list(hpf.parameters())

    x = torch.randn(2, 3, 6, 5)
    # 8 * x - (sum of the 8 neighbours, zero padded) = 9 * x - 3x3 box sum
    box = F.conv2d(x.reshape(6, 1, 6, 5), torch.ones(1, 1, 3, 3), padding=1).reshape(2, 3, 6, 5)
    torch.testing.assert_close(hpf(x), (9 * x - box) / w_hpf, rtol=1e-5, atol=1e-5)


def test_highpass_on_a_constant_image_by_hand():
    c = 2.0
    out = HighPass(w_hpf=1.0)(torch.full((1, 2, 4, 4), c))
    # interior: 8c - 8c = 0; edge: 8c - 5c = 3c; corner: 8c - 3c = 5c (zero padding)
    expected = torch.tensor([[5, 3, 3, 5], [3, 0, 0, 3], [3, 0, 0, 3], [5, 3, 3, 5]]) * c
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], expected)  # depthwise: channels do not mix


def test_highpass_does_not_mix_channels():
    x = torch.zeros(1, 3, 5, 5)
    x[0, 1, 2, 2] = 1.0
    out = HighPass(1.0)(x)
    assert out[0, 0].abs().sum() == 0 and out[0, 2].abs().sum() == 0
    assert out[0, 1, 2, 2] == 8 and out[0, 1, 1, 1] == -1 and out[0, 1].sum() == 0
