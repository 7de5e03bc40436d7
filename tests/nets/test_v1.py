"""StarGAN v1 networks: released-checkpoint layout, shapes, label tiling and the instance norm."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stargan.config import V1ModelConfig
from stargan.nets.v1 import Discriminator, Generator, InstanceNorm, ResidualBlock, build_networks
from stargan.v1 import Discriminator as PublicDiscriminator
from stargan.v1 import Generator as PublicGenerator
from tests import tiny
from tests.reference_keys import read_key_file

# The two released configurations, by the start of their section title in the key file.
RELEASED = {"CelebA 128": V1ModelConfig(),
            "Both": V1ModelConfig(img_size=256, c_dim=5, c2_dim=8)}
REFERENCE = read_key_file("stargan_v1_official_state_dict_keys.tsv")
TINY = tiny.v1_model()


def _config_of(title: str) -> V1ModelConfig:
    matches = [cfg for prefix, cfg in RELEASED.items() if title.startswith(prefix)]
    assert len(matches) == 1, f"unexpected section {title!r} in the v1 key file"
    return matches[0]


def test_reference_file_has_both_released_configurations():
    assert len(REFERENCE) == 2
    for title, ref in REFERENCE.items():
        _config_of(title)
        assert list(ref) == ["G", "D"]


@pytest.mark.parametrize("title", sorted(REFERENCE))
def test_state_dict_keys_shapes_and_counts_match_the_released_models(title):
    ref = REFERENCE[title]
    nets = build_networks(_config_of(title))
    for short, net in (("G", nets.generator), ("D", nets.discriminator)):
        ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert ours == ref[short].keys, short
        assert sum(p.numel() for p in net.parameters()) == ref[short].params, short


def test_public_api_names_the_networks():
    assert PublicGenerator is Generator and PublicDiscriminator is Discriminator


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("model", [TINY, replace(TINY, c2_dim=2), replace(TINY, img_size=32, d_repeat_num=4)],
                         ids=["one-dataset", "both", "img32"])
def test_shapes(model):
    torch.manual_seed(0)
    nets = build_networks(model)
    s = model.img_size
    x = torch.rand(2, 3, s, s) * 2 - 1
    c = torch.rand(2, model.label_dim)
    out = nets.generator(x, c)
    assert out.shape == (2, 3, s, s) and out.abs().max() <= 1   # tanh
    out_src, out_cls = nets.discriminator(out)
    patch = s // 2**model.d_repeat_num
    assert out_src.shape == (2, 1, patch, patch)
    assert out_cls.shape == (2, model.c_dim + model.c2_dim)
    assert nets.generator.main[0].in_channels == 3 + model.label_dim
    assert nets.discriminator.conv2.kernel_size == (patch, patch)


def test_generator_tiles_the_labels_over_the_image():
    torch.manual_seed(0)
    G = Generator(conv_dim=4, label_dim=2, repeat_num=1)
    x = torch.rand(2, 3, 8, 8)
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    planes = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])   # image 0: channel 3 all ones, 4 zeros
    tiled = torch.cat([x, torch.stack([planes, planes.flip(0)])], dim=1)
    torch.testing.assert_close(G(x, c), G.main(tiled))
    assert not torch.allclose(G(x, c), G(x, c.flip(0)))   # the label changes the output
    with pytest.raises(ValueError, match=r"c must be labels of shape \[2, 2\]"):
        G(x, torch.zeros(2, 3))


def test_discriminator_rejects_an_image_size_its_head_cannot_cover():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*d_repeat_num"):
        Discriminator(img_size=24, conv_dim=8, c_dim=3, repeat_num=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_networks(replace(TINY, img_size=18, d_repeat_num=1))


def test_build_without_discriminator_and_seeded_default_init():
    nets = build_networks(TINY, with_discriminator=False)
    assert nets.discriminator is None and [n for n, _ in nets.items()] == ["generator"]
    torch.manual_seed(3)
    a = build_networks(TINY)
    torch.manual_seed(3)
    b = build_networks(TINY)
    for (_, na), (_, nb) in zip(a.items(), b.items()):
        for pa, pb in zip(na.state_dict().values(), nb.state_dict().values()):
            assert torch.equal(pa, pb)
    assert all(m.bias is None for m in a.generator.modules() if isinstance(m, torch.nn.Conv2d))


# ---------------------------------------------------------------- instance norm and residual block

def test_instance_norm_uses_instance_statistics_in_both_modes_and_tracks_in_train_only():
    norm = InstanceNorm(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 3, 5, 5) * 3 + 2
    mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm.train()(x), expected)
    tracked = norm.running_mean.clone()
    assert not torch.equal(tracked, torch.zeros(3))   # updated in train mode, as released
    torch.testing.assert_close(norm.eval()(x), expected)   # nn.InstanceNorm2d would use running stats here
    assert torch.equal(norm.running_mean, tracked)


def test_residual_block_is_identity_plus_residual():
    torch.manual_seed(0)
    block = ResidualBlock(4)
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(block(x), x + block.main(x))
    with torch.no_grad():   # zero the last norm's affine: the residual vanishes
        block.main[4].weight.zero_()
        block.main[4].bias.zero_()
    torch.testing.assert_close(block(x), x)
