"""FAN: the 98-landmark face alignment network whose heatmaps give StarGAN v2 its high-pass masks.

The layout is the released configuration (one hourglass of depth 4, 256 features, CoordConv layers,
99 output maps of which the first 98 are landmarks), so ``wing.ckpt`` loads without renaming. Input:
N x 3 x 256 x 256 in [0, 1]; output: N x 99 x 64 x 64 heatmaps. ``get_heatmap`` and ``get_landmark``
take images in [-1, 1] of any square size, as the rest of the project does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stargan.faces.heatmaps import landmarks_from_heatmaps, masks_from_heatmaps

NUM_LANDMARKS = 98
FAN_SIZE = 256       # the network's input resolution
HOURGLASS_DEPTH = 4
FEATURES = 256


def coordinates(x: torch.Tensor) -> torch.Tensor:
    """The three CoordConv channels for ``x`` (N x C x H x W): xx, yy and their normalised radius.

    xx varies along the height axis and yy along the width axis, both from -1 to 1.
    """
    n, _, h, w = x.shape
    xx = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    yy = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    rr = torch.sqrt(xx ** 2 + yy ** 2)
    return torch.cat([xx, yy, rr / rr.max()], dim=1)


class CoordConv(nn.Module):
    """A convolution whose input gets the coordinate channels of :func:`coordinates` appended."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 3, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, coordinates(x)], dim=1))


class ConvBlock(nn.Module):
    """Pre-activation block of three 3x3 convolutions (out/2, out/4, out/4 channels), concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if in_channels != out_channels:  # the residual needs a projection
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                            nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], dim=1) + residual


class HourGlass(nn.Module):
    """A CoordConv, then the recursive hourglass: at each level a full-resolution branch (b1) plus a
    half-resolution branch (b2, the next level or b2_plus_1, b3) upsampled back."""

    def __init__(self, depth: int = HOURGLASS_DEPTH, features: int = FEATURES):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(features, features, 1)
        # Registered in the released order, so state_dict() lists keys as wing.ckpt does.
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, self.coordconv(x))


class FAN(nn.Module):
    """The released landmark network. Always in eval mode (BatchNorm running statistics), no gradients.

    ``FAN()`` has random weights; :func:`stargan.faces.load_fan` builds one with the release's.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = CoordConv(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, FEATURES)
        self.m0 = HourGlass(HOURGLASS_DEPTH, FEATURES)
        self.top_m_0 = ConvBlock(FEATURES, FEATURES)
        self.conv_last0 = nn.Conv2d(FEATURES, FEATURES, 1)
        self.bn_end0 = nn.BatchNorm2d(FEATURES)
        self.l0 = nn.Conv2d(FEATURES, NUM_LANDMARKS + 1, 1)  # + 1: a boundary map, never used
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FAN":
        """Stays in eval mode: the released masks use BatchNorm's running statistics."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x 256 x 256 in [0, 1] -> N x 99 x 64 x 64 heatmaps."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        return self.l0(F.relu(self.bn_end0(self.conv_last0(x))))

    @torch.no_grad()
    def landmark_heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x H x W in [-1, 1] (H = W) -> the 98 landmark heatmaps, N x 98 x 64 x 64.

        Computed in the network's dtype on ``x``'s device, returned in ``x``'s dtype.
        """
        if x.dim() != 4 or x.size(1) != 3 or x.size(2) != x.size(3):
            raise ValueError(f"FAN expects N x 3 x H x W images with H = W, got {tuple(x.shape)}")
        dtype = self.l0.weight.dtype
        x = x.to(dtype)
        if x.size(2) != FAN_SIZE:
            x = F.interpolate(x, size=FAN_SIZE, mode="bilinear", align_corners=False)
        return self(x * 0.5 + 0.5)[:, :NUM_LANDMARKS]

    @torch.no_grad()
    def get_heatmap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x 3 x H x W in [-1, 1] -> the (coarse, fine) face masks, each N x 1 x 256 x 256."""
        coarse, fine = masks_from_heatmaps(self.landmark_heatmaps(x))
        return coarse.to(x.dtype), fine.to(x.dtype)

    @torch.no_grad()
    def get_landmark(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x H x W in [-1, 1] -> N x 98 x 2 landmark positions (x, y) in input pixels."""
        return landmarks_from_heatmaps(self.landmark_heatmaps(x), x.size(2)).to(x.dtype)
