"""StarGAN v1 networks (Choi et al., CVPR 2018, Appendix): generator G(x, c) and discriminator D(x).

The layout (and therefore every ``state_dict`` key) follows the released models, so their
``NNNNNN-G.ckpt`` / ``NNNNNN-D.ckpt`` files load without renaming. Initialisation is PyTorch's
default, as released.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stargan.config import V1ModelConfig


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm that always normalises with each image's own statistics.

    It tracks running statistics like the released layers (so the state-dict keys match) but never
    uses them: the released code keeps G in train mode even at test time, while
    ``nn.InstanceNorm2d(track_running_stats=True)`` would switch to them in eval mode and change the
    outputs. Running statistics are updated in train mode only.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        track = self.training
        return F.instance_norm(x, self.running_mean if track else None, self.running_var if track else None,
                               self.weight, self.bias, True, self.momentum, self.eps)


class ResidualBlock(nn.Module):
    """x + (conv3x3-IN-ReLU-conv3x3-IN)(x), without biases."""

    def __init__(self, dim: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), InstanceNorm(dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), InstanceNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """G(x, c): the label vector c is tiled over the image and concatenated to it as extra channels.

    conv7x7, two strided conv4x4 down-samplings, ``repeat_num`` residual blocks, two transposed
    conv4x4 up-samplings, conv7x7 to RGB and tanh; instance norm and ReLU after every inner conv.
    """

    def __init__(self, conv_dim: int = 64, label_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        self.label_dim = label_dim
        layers: list[nn.Module] = [nn.Conv2d(3 + label_dim, conv_dim, 7, 1, 3, bias=False),
                                   InstanceNorm(conv_dim), nn.ReLU()]
        dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), InstanceNorm(dim * 2), nn.ReLU()]
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False), InstanceNorm(dim // 2),
                       nn.ReLU()]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1] with H, W divisible by 4; c: [B, label_dim]."""
        if c.dim() != 2 or c.size(1) != self.label_dim or c.size(0) != x.size(0):
            raise ValueError(f"c must be labels of shape [{x.size(0)}, {self.label_dim}] (one row per "
                             f"image), got {tuple(c.shape)}")
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))


class Discriminator(nn.Module):
    """PatchGAN D(x) -> (D_src [B, 1, h, w], D_cls [B, c_dim]).

    ``repeat_num`` strided conv4x4 + leaky ReLU from ``conv_dim`` channels, doubling; a 3x3 source
    head and a domain head whose kernel covers the whole remaining img_size / 2**repeat_num map.
    """

    def __init__(self, img_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        kernel = img_size // 2**repeat_num
        if kernel < 1 or kernel * 2**repeat_num != img_size:
            raise ValueError(f"img_size={img_size} must be a multiple of 2**d_repeat_num="
                             f"{2**repeat_num}; change model.img_size or model.d_repeat_num")
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, c_dim, kernel, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)


@dataclass
class Networks:
    """G and D. ``discriminator`` is None when only sampling."""

    generator: Generator
    discriminator: Discriminator | None = None

    def items(self) -> list[tuple[str, nn.Module]]:
        names = ("generator", "discriminator")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    def to(self, device: torch.device | str) -> "Networks":
        for _, net in self.items():
            net.to(device)
        return self


def build_networks(cfg: V1ModelConfig, with_discriminator: bool = True) -> Networks:
    """G with ``cfg.label_dim`` label channels and D with ``c_dim + c2_dim`` domain logits."""
    if cfg.c_dim < 1 or cfg.c2_dim < 0:
        raise ValueError(f"model.c_dim must be >= 1 and model.c2_dim >= 0, got {cfg.c_dim} and {cfg.c2_dim}")
    if cfg.img_size % 4:
        raise ValueError(f"model.img_size={cfg.img_size} must be divisible by 4 (G down-samples twice)")
    generator = Generator(cfg.g_conv_dim, cfg.label_dim, cfg.g_repeat_num)
    discriminator = (Discriminator(cfg.img_size, cfg.d_conv_dim, cfg.c_dim + cfg.c2_dim, cfg.d_repeat_num)
                     if with_discriminator else None)
    return Networks(generator, discriminator)
