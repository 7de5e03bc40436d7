"""StarGAN v2 networks: released-checkpoint layout, shapes, per-domain heads, init and the mask path."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from stargan.config import ModelConfig
from stargan.nets import v2
from stargan.nets.blocks import ResBlk, he_init
from stargan.nets.v2 import Discriminator, Generator, MappingNetwork, StyleEncoder, build_networks
from tests import tiny
from tests.reference_keys import read_key_file

TINY = tiny.v2_model()


# ---------------------------------------------------------------- layout of the released checkpoints

def _settings(title: str) -> dict[str, float]:
    """The section title's ``name=value`` pairs: img_size, num_domains, w_hpf, latent_dim, style_dim."""
    return {name: float(value) for name, value in re.findall(r"(\w+)=([\d.]+)", title)}


REFERENCE = {(int(s["img_size"]), int(s["num_domains"]), s["w_hpf"]): (s, nets)
             for s, nets in ((_settings(title), nets) for title, nets in
                             read_key_file("starganv2_official_state_dict_keys.tsv").items())}


@pytest.fixture(scope="module", params=sorted(REFERENCE), ids=lambda k: f"img{k[0]}-dom{k[1]}-hpf{k[2]:g}")
def paper_nets(request):
    img_size, num_domains, w_hpf = request.param
    settings, ref = REFERENCE[request.param]
    cfg = ModelConfig(img_size=img_size, num_domains=num_domains, w_hpf=w_hpf,
                      latent_dim=int(settings["latent_dim"]), style_dim=int(settings["style_dim"]))
    torch.manual_seed(0)
    return ref, build_networks(cfg)


def test_reference_file_has_both_paper_configurations():
    assert set(REFERENCE) == {(256, 2, 1.0), (256, 3, 0.0)}
    for settings, ref in REFERENCE.values():
        assert (settings["latent_dim"], settings["style_dim"]) == (16, 64)
        assert list(ref) == ["generator", "mapping_network", "style_encoder", "discriminator"]


def test_state_dict_keys_shapes_and_counts_match_the_released_models(paper_nets):
    ref, nets = paper_nets
    assert [name for name, _ in nets.items()] == ["generator", "mapping_network", "style_encoder",
                                                  "discriminator"]
    for name, net in nets.items():
        sd = net.state_dict()
        ours = {k: tuple(v.shape) for k, v in sd.items()}
        assert ours == ref[name].keys, name
        assert len(sd) == ref[name].tensors, name
        assert sum(p.numel() for p in net.parameters()) == ref[name].params, name


# ---------------------------------------------------------------- shapes and heads

@pytest.mark.parametrize("img_size", [16, 32, 64])
@pytest.mark.parametrize("num_domains", [1, 2, 3])
def test_output_shapes(img_size, num_domains):
    cfg = tiny.v2_model(img_size=img_size, num_domains=num_domains)
    torch.manual_seed(0)
    nets = build_networks(cfg)
    b = 3
    x = torch.randn(b, 3, img_size, img_size)
    y = torch.arange(b) % num_domains
    z = torch.randn(b, cfg.latent_dim)
    s = nets.mapping_network(z, y)
    assert s.shape == (b, cfg.style_dim)
    assert nets.style_encoder(x, y).shape == (b, cfg.style_dim)
    assert nets.generator(x, s).shape == (b, 3, img_size, img_size)
    assert nets.discriminator(x, y).shape == (b,)
    assert len(nets.mapping_network.unshared) == num_domains
    assert len(nets.style_encoder.unshared) == num_domains
    assert nets.discriminator.main[-1].out_channels == num_domains


def test_widths_follow_base_dim_and_max_conv_dim():
    g = Generator(img_size=64, style_dim=8, max_conv_dim=16, w_hpf=0, base_dim=8)
    assert g.from_rgb.out_channels == 8
    # log2(64) - 4 = 2 down blocks (64 -> 16 px): widths 8 -> 16 -> 16 (capped), then 2 bottleneck blocks
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g.encode] == [
        (8, 16), (16, 16), (16, 16), (16, 16)]
    assert [b.downsample for b in g.encode] == [True, True, False, False]
    assert [b.upsample for b in g.decode] == [False, False, True, True]
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g.decode] == [
        (16, 16), (16, 16), (16, 16), (16, 8)]
    e = StyleEncoder(img_size=64, style_dim=8, max_conv_dim=16, base_dim=8)
    # log2(64) - 2 = 4 down blocks to 4 x 4, then a 4 x 4 valid conv to 1 x 1
    blocks = [m for m in e.shared if isinstance(m, ResBlk)]
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in blocks] == [(8, 16)] + [(16, 16)] * 3
    # paper width when base_dim is 0
    assert Generator(img_size=256, max_conv_dim=64).from_rgb.out_channels == 2**14 // 256


def test_mapping_network_uses_the_head_of_domain_y():
    torch.manual_seed(0)
    f = build_networks(tiny.v2_model(num_domains=3)).mapping_network
    z = torch.randn(4, 4)
    y = torch.tensor([2, 0, 1, 2])
    out = f(z, y)
    h = z
    for layer in f.shared:  # by hand: 4 x (linear, relu)
        h = torch.relu(h @ layer.weight.T + layer.bias) if isinstance(layer, torch.nn.Linear) else h
    for i in range(4):
        expected = f.unshared[int(y[i])](h[i:i + 1])[0]
        torch.testing.assert_close(out[i], expected)
    # different heads give different styles for the same z
    assert not torch.allclose(f(z[:1], torch.tensor([0])), f(z[:1], torch.tensor([1])))


def test_style_encoder_uses_the_head_of_domain_y():
    torch.manual_seed(0)
    e = build_networks(tiny.v2_model(num_domains=3)).style_encoder
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([1, 2, 0, 1])
    out = e(x, y)
    feats = e.shared(x).flatten(1)
    assert feats.shape == (4, 16)  # widths 8 -> 16 -> 32, capped at max_conv_dim 16
    for i in range(4):
        head = e.unshared[int(y[i])]
        torch.testing.assert_close(out[i], feats[i] @ head.weight.T + head.bias)


def test_discriminator_returns_the_logit_of_domain_y():
    torch.manual_seed(0)
    d = build_networks(tiny.v2_model(num_domains=3)).discriminator
    with torch.no_grad():  # He init zeroes biases; give the heads distinct ones
        d.main[-1].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([2, 2, 0, 1])
    out = d(x, y)
    feats = d.main[:-1](x)
    assert feats.shape[2:] == (1, 1)
    head = d.main[-1]
    for i in range(4):
        k = int(y[i])
        expected = (head.weight[k, :, 0, 0] * feats[i, :, 0, 0]).sum() + head.bias[k]
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("img_size", [48, 8, 0, 100])
def test_invalid_img_size_raises(img_size):
    for make in (lambda: Generator(img_size=img_size, base_dim=8),
                 lambda: StyleEncoder(img_size=img_size, base_dim=8),
                 lambda: Discriminator(img_size=img_size, base_dim=8)):
        with pytest.raises(ValueError, match="power of two"):
            make()
    with pytest.raises(ValueError):
        build_networks(tiny.v2_model(img_size=img_size))


def test_zero_domains_raises():
    with pytest.raises(ValueError, match="num_domains"):
        build_networks(tiny.v2_model(num_domains=0))


def test_networks_items_and_without_discriminator():
    nets = build_networks(TINY, with_discriminator=False)
    assert nets.discriminator is None
    assert [n for n, _ in nets.items()] == ["generator", "mapping_network", "style_encoder"]


# ---------------------------------------------------------------- initialisation

def test_he_init_on_a_large_layer():
    torch.manual_seed(0)
    lin = torch.nn.Linear(1000, 400)
    conv = torch.nn.Conv2d(64, 256, 3)
    he_init(lin)
    he_init(conv)
    for layer, fan_in in ((lin, 1000), (conv, 64 * 9)):
        assert torch.count_nonzero(layer.bias) == 0
        std = layer.weight.std().item()
        assert abs(std - math.sqrt(2 / fan_in)) < 0.03 * math.sqrt(2 / fan_in)
        assert abs(layer.weight.mean().item()) < 0.05 * math.sqrt(2 / fan_in)
    # other modules are left alone
    norm = torch.nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        norm.weight.fill_(3.0)
    he_init(norm)
    assert torch.all(norm.weight == 3.0)


def test_build_networks_applies_he_init_everywhere():
    torch.manual_seed(0)
    nets = build_networks(tiny.v2_model(hidden_dim=512))
    for name, net in nets.items():
        for mod_name, mod in net.named_modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                assert torch.count_nonzero(mod.bias) == 0, f"{name}.{mod_name}"
    w = nets.mapping_network.shared[2].weight  # Linear(512, 512)
    assert abs(w.std().item() - math.sqrt(2 / 512)) < 0.03 * math.sqrt(2 / 512)


def test_build_networks_depends_on_the_torch_seed():
    torch.manual_seed(1)
    a = build_networks(TINY).generator.from_rgb.weight.clone()
    torch.manual_seed(1)
    b = build_networks(TINY).generator.from_rgb.weight.clone()
    torch.manual_seed(2)
    c = build_networks(TINY).generator.from_rgb.weight.clone()
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- high-pass variant

def test_w_hpf_adds_one_down_block_and_drops_decoder_skips():
    plain = Generator(img_size=32, style_dim=8, max_conv_dim=32, w_hpf=0, base_dim=8)
    hpf = Generator(img_size=32, style_dim=8, max_conv_dim=32, w_hpf=1, base_dim=8)
    # log2(32) - 4 = 1 down block (+1 with w_hpf), and 2 bottleneck blocks
    assert len(plain.encode) == 3 and len(hpf.encode) == 4
    assert len(plain.decode) == 3 and len(hpf.decode) == 4
    assert not hasattr(plain, "hpf") and "hpf.filter" not in plain.state_dict()
    assert "hpf.filter" in hpf.state_dict()
    assert all(b.w_hpf == 1 for b in hpf.decode) and all(b.w_hpf == 0 for b in plain.decode)
    # the filter survives build_networks' He init, and scales with 1 / w_hpf
    laplace = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])
    built = build_networks(tiny.v2_model(img_size=32, w_hpf=2.0), with_discriminator=False).generator
    torch.testing.assert_close(built.hpf.filter, laplace / 2)

    torch.manual_seed(0)
    hpf.apply(he_init)
    x = torch.randn(2, 16, 16, 16)
    s = torch.randn(2, 8)
    blk = hpf.decode[-1]                      # upsampling block, learned shortcut 16 -> 8
    torch.testing.assert_close(blk(x, s), blk._residual(x, s))
    assert not torch.allclose(blk(x, s), (blk._residual(x, s) + blk._shortcut(x)) / math.sqrt(2))


# ---------------------------------------------------------------- face masks (CelebA-HQ, w_hpf > 0)

@pytest.fixture(scope="module")
def masked_generator():
    torch.manual_seed(0)
    g = Generator(img_size=128, style_dim=8, max_conv_dim=32, w_hpf=1, base_dim=8)
    g.apply(he_init)
    with torch.no_grad():  # make the norms non-trivial so every path matters
        for name, p in g.named_parameters():
            if "norm" in name and "fc" not in name:
                p.add_(0.1 * torch.randn_like(p))
    return g.eval()


def test_generator_with_masks_adds_high_pass_encoder_features(masked_generator, monkeypatch):
    g = masked_generator
    torch.manual_seed(1)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    s = torch.randn(2, 8)
    masks = (torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128))

    encoder_inputs = {}

    def record(module, args):
        encoder_inputs.setdefault(args[0].size(2), args[0])

    hooks = [blk.register_forward_pre_hook(record) for blk in g.encode]
    seen = []
    real_hpf = g.hpf.forward
    monkeypatch.setattr(g.hpf, "forward", lambda t: (seen.append(t), real_hpf(t))[1])
    try:
        with torch.no_grad():
            out = g(x, s, masks=masks)
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 3, 128, 128)
    assert [t.size(2) for t in seen] == [32, 64, 128]
    for t in seen:
        r = t.size(2)
        mask = F.interpolate(masks[0] if r == 32 else masks[1], size=r, mode="bilinear")
        torch.testing.assert_close(t, mask * encoder_inputs[r])


def test_generator_mask_path_changes_the_output(masked_generator):
    g = masked_generator
    torch.manual_seed(2)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    s = torch.randn(1, 8)
    ones, zeros = torch.ones(1, 1, 128, 128), torch.zeros(1, 1, 128, 128)
    with torch.no_grad():
        plain = g(x, s)
        torch.testing.assert_close(g(x, s, masks=(zeros, zeros)), plain)  # zero masks add nothing
        coarse_only = g(x, s, masks=(ones, zeros))   # 32 px level uses masks[0]
        fine_only = g(x, s, masks=(zeros, ones))     # 64 and 128 px levels use masks[1]
        both = g(x, s, masks=(ones, ones))
    for other in (coarse_only, fine_only, both):
        assert (other - plain).abs().max() > 1e-4
    assert (coarse_only - fine_only).abs().max() > 1e-4


def test_masked_sizes_are_the_official_ones():
    assert tuple(v2.MASKED_SIZES) == (32, 64, 128)


def test_mapping_network_layout():
    f = MappingNetwork(latent_dim=4, style_dim=8, num_domains=2, hidden_dim=16)
    linears = [m for m in f.shared if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 16)] + [(16, 16)] * 3
    head = [m for m in f.unshared[0] if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head] == [(16, 16)] * 3 + [(16, 8)]
    assert isinstance(f.unshared[0][-1], torch.nn.Linear)  # no activation on the style


def test_g_downsamples_sets_the_bottleneck_resolution():
    paper = build_networks(tiny.v2_model(img_size=32)).generator
    deeper = build_networks(tiny.v2_model(img_size=32, g_downsamples=3)).generator
    assert len(paper.encode) == 1 + 2 and len(deeper.encode) == 3 + 2  # down blocks + 2 bottleneck
    x, s = torch.randn(2, 3, 32, 32), torch.randn(2, TINY.style_dim)
    sizes = []
    hook = deeper.encode[-1].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    assert deeper(x, s).shape == (2, 3, 32, 32)
    hook.remove()
    assert sizes == [4]
    with pytest.raises(ValueError, match="g_downsamples=5"):
        Generator(img_size=32, num_downsamples=5)


def test_g_out_norm_false_drops_the_output_instance_norm_and_keeps_the_state_dict_names():
    paper = build_networks(tiny.v2_model(img_size=32)).generator
    plain = build_networks(tiny.v2_model(img_size=32, g_out_norm=False)).generator
    assert isinstance(paper.to_rgb[0], torch.nn.InstanceNorm2d) and isinstance(plain.to_rgb[0], torch.nn.Identity)
    assert set(paper.state_dict()) - set(plain.state_dict()) == {"to_rgb.0.weight", "to_rgb.0.bias"}
    assert set(plain.state_dict()) < set(paper.state_dict())     # every other name as released
    # What the norm takes away: with it, the features G's output layer reads have one per-channel mean
    # (its affine bias) in every image, so a dark and a bright copy of a picture give them alike
    x, s = torch.rand(1, 3, 32, 32) * 0.2, torch.randn(1, TINY.style_dim)
    means = {}
    for name, g in (("paper", paper), ("plain", plain)):
        hook = g.to_rgb[0].register_forward_hook(lambda m, i, o, name=name: means.update({name: o.mean(dim=(2, 3))}))
        with torch.no_grad():
            g(torch.cat([x - 0.8, x + 0.8]), s.expand(2, -1))
        hook.remove()
    torch.testing.assert_close(means["paper"][0], means["paper"][1], atol=1e-5, rtol=0)
    torch.testing.assert_close(means["paper"][0], paper.to_rgb[0].bias.detach(), atol=1e-5, rtol=0)
    assert (means["plain"][0] - means["plain"][1]).abs().max() > 1e-2


def _skip_points(gen, x, s):
    """G(x, s) without gradients, and the tensors where U-Net skips join, recorded by hooks on that pass."""
    seen = {}
    hooks = [gen.from_rgb.register_forward_hook(lambda m, i, o: seen.update(rgb=o)),
             gen.encode[0].register_forward_hook(lambda m, i, o: seen.update(half=o)),
             gen.decode[-1].register_forward_hook(lambda m, i, o: seen.update(last=o)),
             gen.decode[-2].register_forward_hook(lambda m, i, o: seen.update(up=o)),
             gen.decode[-1].register_forward_pre_hook(lambda m, i: seen.update(into_last=i[0])),
             gen.to_rgb.register_forward_pre_hook(lambda m, i: seen.update(out=i[0]))]
    try:
        with torch.no_grad():
            return gen(x, s), seen
    finally:
        for hook in hooks:
            hook.remove()


def test_g_skips_add_the_encoder_features_to_each_up_sampled_decoder_output_without_weights_of_their_own():
    paper = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0, g_downsamples=2)).generator
    unet = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0, g_downsamples=2, g_skips=True)).generator
    assert list(unet.state_dict()) == list(paper.state_dict())
    unet.load_state_dict(paper.state_dict())
    x, s = torch.randn(2, 3, 32, 32), torch.randn(2, TINY.style_dim)
    y, seen = _skip_points(unet, x, s)
    assert unet.decode[-1].upsample and unet.decode[-2].upsample and unet.encode[0].downsample
    torch.testing.assert_close(seen["out"], seen["last"] + seen["rgb"])         # 32x32: from_rgb's output
    torch.testing.assert_close(seen["into_last"], seen["up"] + seen["half"])  # 16x16: the first block's
    assert (y - paper(x, s)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="g_skips=true needs model.w_hpf=0"):
        ModelConfig(g_skips=True, w_hpf=1.0)
    with pytest.raises(ValueError, match="skips need w_hpf=0"):
        Generator(img_size=32, w_hpf=1.0, skips=True)


def test_g_skip_full_false_keeps_the_lower_skips_and_leaves_out_the_full_resolution_one():
    full = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0, g_downsamples=2, g_skips=True)).generator
    low = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0, g_downsamples=2, g_skips=True,
                                       g_skip_full=False)).generator
    assert list(low.state_dict()) == list(full.state_dict())
    low.load_state_dict(full.state_dict())
    x, s = torch.randn(2, 3, 32, 32), torch.randn(2, TINY.style_dim)
    y, seen = _skip_points(low, x, s)
    with torch.no_grad():
        _, cache = low.encode_image(x)
    torch.testing.assert_close(seen["out"], seen["last"], rtol=0, atol=0)     # 32x32: nothing added
    torch.testing.assert_close(seen["into_last"], seen["up"] + seen["half"])  # 16x16: the skip as before
    assert sorted(cache) == [16]
    assert (y - full(x, s)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="g_skip_full=false needs model.g_skips=true"):
        ModelConfig(w_hpf=0.0, g_skip_full=False)


def test_g_residual_adds_the_input_to_what_the_output_layer_draws():
    paper = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0)).generator
    residual = build_networks(tiny.v2_model(img_size=32, w_hpf=0.0, g_residual=True)).generator
    assert list(residual.state_dict()) == list(paper.state_dict())
    residual.load_state_dict(paper.state_dict())
    x, s = torch.randn(2, 3, 32, 32), torch.randn(2, TINY.style_dim)
    with torch.no_grad():
        torch.testing.assert_close(residual(x, s), paper(x, s) + x)
        residual.to_rgb[-1].weight.zero_()
        residual.to_rgb[-1].bias.zero_()
        torch.testing.assert_close(residual(x, s), x)  # drawing nothing keeps the input exactly
