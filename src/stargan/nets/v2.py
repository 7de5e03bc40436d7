"""StarGAN v2 networks: generator G(x, s), mapping network F_y(z), style encoder E_y(x), discriminator D_y(x).

The layout (and therefore every ``state_dict`` key) follows the released models, so the official
checkpoints load without renaming. Widths can be shrunk through :class:`~stargan.config.ModelConfig`
(``base_dim``, ``max_conv_dim``, ``hidden_dim``) for CPU-sized models.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stargan.config import ModelConfig
from stargan.nets.blocks import AdainResBlk, HighPass, ResBlk, he_init

MASKED_SIZES = (32, 64, 128)  # resolutions at which masked high-pass encoder features are added

Masks = tuple[torch.Tensor, torch.Tensor] | None
# Face masks (coarse, fine) of a batch of images, computed without gradients (w_hpf > 0 only); the
# released function is FAN.get_heatmap (stargan.faces).
MaskFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _num_downsamplings(img_size: int, offset: int) -> int:
    if img_size < 16 or img_size & (img_size - 1):
        raise ValueError(f"img_size must be a power of two >= 16, got {img_size}")
    return int(math.log2(img_size)) - offset


class Generator(nn.Module):
    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512,
                 w_hpf: float = 1.0, base_dim: int = 0, num_downsamples: int = 0, out_norm: bool = True,
                 skips: bool = False, residual: bool = False, skip_full: bool = True):
        super().__init__()
        if skips and w_hpf > 0:
            raise ValueError("skips need w_hpf=0 (the high-pass face skips take their place)")
        dim_in = base_dim or 2**14 // img_size
        self.img_size = img_size
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        # The paper's output layer normalises its input per image and channel: an output's colours then
        # come from the style and the picture's layout, not from the source's colours. ``out_norm=False``
        # (not in the paper) leaves that out, for domains that keep the source's colours.
        norm = [nn.InstanceNorm2d(dim_in, affine=True)] if out_norm else [nn.Identity()]
        self.to_rgb = nn.Sequential(*norm, nn.LeakyReLU(0.2), nn.Conv2d(dim_in, 3, 1, 1, 0))
        # The paper stops at 16x16 (8x8 with w_hpf); a small image may want a deeper bottleneck.
        paper_num = _num_downsamplings(img_size, 4) + (1 if w_hpf > 0 else 0)
        repeat_num = num_downsamples or paper_num
        self.num_downsamples = repeat_num  # the bottleneck is img_size / 2**num_downsamples wide
        if not 0 <= repeat_num <= int(math.log2(img_size)) - 1:
            raise ValueError(f"g_downsamples={num_downsamples} does not fit img_size={img_size}")
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))
        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)
        # ``skips`` (not in the paper; no weights of their own): each up-sampling block's output gets the
        # encoder's features of its resolution added, as in a U-Net, so that G can keep the source's
        # picture exactly and its styled path only has to draw what changes. Without ``skip_full`` the
        # full-resolution one is left out: the last block redraws the fine detail from the lower ones.
        self.skips = skips
        self.skip_full = skip_full
        # ``residual`` (not in the paper): G's output layer draws a change that is added to its input.
        self.residual = residual

    def forward(self, x: torch.Tensor, s: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1]; s: [B, style_dim]; masks: face masks (coarse, fine) or None."""
        return self.decode_from(self.encode_image(x, masks), s, masks)

    def encode_image(self, x: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The style-independent half of G: bottleneck features, and what the decoder adds back, by
        resolution: the encoder features of the masked high-pass skips (with masks) or of the U-Net skips
        (``skips``), and under key 0 the input image itself (``residual``); empty otherwise."""
        cache = {0: x} if self.residual else {}
        x = self.from_rgb(x)
        for block in self.encode:
            masked = masks is not None and x.size(2) in MASKED_SIZES
            if masked or self._skips_at(block.downsample, x.size(2)):
                cache[x.size(2)] = x
            x = block(x)
        return x, cache

    def _skips_at(self, resamples: bool, size: int) -> bool:
        """Whether a U-Net skip joins at this block: the encoder's features of ``size`` that enter a
        down-sampling block, added to the output of the decoder's up-sampling block of that size."""
        return self.skips and resamples and (self.skip_full or size < self.img_size)

    def decode_from(self, features: tuple[torch.Tensor, dict[int, torch.Tensor]], s: torch.Tensor,
                    masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The styled half of G, from :meth:`encode_image`'s output for the same images and masks."""
        x, cache = features
        for block in self.decode:
            x = block(x, s)
            if masks is not None and x.size(2) in MASKED_SIZES:
                mask = masks[0] if x.size(2) == 32 else masks[1]
                mask = F.interpolate(mask, size=x.size(2), mode="bilinear")
                x = x + self.hpf(mask * cache[x.size(2)])
            elif self._skips_at(block.upsample, x.size(2)):
                x = x + cache[x.size(2)]
        return self.to_rgb(x) + cache[0] if self.residual else self.to_rgb(x)


class MappingNetwork(nn.Module):
    """F: z -> s. Four shared layers, then one head of four layers per domain."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2,
                 hidden_dim: int = 512):
        super().__init__()
        layers = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, style_dim))
            for _ in range(num_domains))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # [B, num_domains, style_dim]
        return out[torch.arange(y.size(0), device=y.device), y]


def _trunk(img_size: int, max_conv_dim: int, base_dim: int) -> tuple[list[nn.Module], int]:
    """Shared body of E and D: conv3x3, down-sampling ResBlks to 4x4, a 4x4 valid conv to 1x1."""
    dim_in = base_dim or 2**14 // img_size
    layers: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(_num_downsamplings(img_size, 2)):
        dim_out = min(dim_in * 2, max_conv_dim)
        layers.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    layers += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return layers, dim_out


class StyleEncoder(nn.Module):
    """E: x -> s, one linear head per domain."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2,
                 max_conv_dim: int = 512, base_dim: int = 0):
        super().__init__()
        layers, dim_out = _trunk(img_size, max_conv_dim, base_dim)
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(x).flatten(1)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # [B, num_domains, style_dim]
        return out[torch.arange(y.size(0), device=y.device), y]


class Discriminator(nn.Module):
    """D: x -> one real/fake logit per domain; the logit of domain y is returned."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512,
                 base_dim: int = 0):
        super().__init__()
        layers, dim_out = _trunk(img_size, max_conv_dim, base_dim)
        layers.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.main(x).flatten(1)  # [B, num_domains]
        return out[torch.arange(y.size(0), device=y.device), y]


@dataclass
class Networks:
    """The four StarGAN v2 networks. ``discriminator`` is None when only sampling."""

    generator: Generator
    mapping_network: MappingNetwork
    style_encoder: StyleEncoder
    discriminator: Discriminator | None = None

    def items(self) -> list[tuple[str, nn.Module]]:
        names = ("generator", "mapping_network", "style_encoder", "discriminator")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    def to(self, device: torch.device | str) -> "Networks":
        for _, net in self.items():
            net.to(device)
        return self


def build_networks(cfg: ModelConfig, with_discriminator: bool = True) -> Networks:
    """Build the networks of ``cfg`` with He initialisation (weights depend on the torch seed)."""
    if cfg.num_domains < 1:
        raise ValueError(f"num_domains must be >= 1, got {cfg.num_domains}")
    nets = Networks(
        generator=Generator(cfg.img_size, cfg.style_dim, cfg.max_conv_dim, cfg.w_hpf, cfg.base_dim,
                            cfg.g_downsamples, cfg.g_out_norm, cfg.g_skips,
                            cfg.g_residual, cfg.g_skip_full),
        mapping_network=MappingNetwork(cfg.latent_dim, cfg.style_dim, cfg.num_domains, cfg.hidden_dim),
        style_encoder=StyleEncoder(cfg.img_size, cfg.style_dim, cfg.num_domains, cfg.max_conv_dim,
                                   cfg.base_dim),
        discriminator=(Discriminator(cfg.img_size, cfg.num_domains, cfg.max_conv_dim, cfg.base_dim)
                       if with_discriminator else None),
    )
    for _, net in nets.items():
        net.apply(he_init)
    return nets
