"""LPIPS (Zhang et al., 2018) with the AlexNet trunk and v0.1 linear heads, and StarGAN v2's diversity score.

The linear heads ship inside the ``lpips`` package; the AlexNet trunk is torchvision's ImageNet file,
resolved and verified by :func:`stargan.metrics.weights.resolve_weights` (fetched on first use when missing).
"""
from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from stargan.hub import sha256_file
from stargan.metrics.weights import (RANDOM_INIT, WeightsError, load_into, load_state_dict, resolve_weights,
                                     seeded_init)

PAIR_BATCH = 64  # image pairs per pass of the linear heads in mean_pairwise_lpips
MIN_SIZE = 32    # AlexNet's pooling leaves nothing of smaller images: they are upsampled to this


def _fit(x: Tensor) -> Tensor:
    """Images smaller than MIN_SIZE are upsampled (bilinear); others are left as they are."""
    if min(x.shape[-2:]) >= MIN_SIZE:
        return x
    return torch.nn.functional.interpolate(x, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)


def _package_model() -> nn.Module:
    """``lpips.LPIPS`` with a randomly initialised trunk: the package never fetches anything then."""
    import lpips

    with warnings.catch_warnings():
        # lpips 0.1.4 builds its trunk with torchvision's deprecated ``alexnet(pretrained=False)``.
        warnings.filterwarnings("ignore", message=".*'pretrained' is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="Arguments other than a weight enum", category=UserWarning)
        try:
            return lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        except TypeError as error:
            raise RuntimeError(
                f"lpips {importlib.metadata.version('lpips')} cannot build its AlexNet with torchvision "
                f"{importlib.metadata.version('torchvision')} ({error}); install an lpips release that "
                "supports this torchvision, or a torchvision that still accepts pretrained=") from error


def _trunk_state(trunk: nn.Module, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """torchvision ``features.<i>.<param>`` -> lpips ``slice<k>.<i>.<param>`` (lpips keeps the indices)."""
    mapped = {}
    for key in trunk.state_dict():
        _, index, param = key.split(".")
        source = f"features.{index}.{param}"
        if source not in state:
            raise WeightsError(f"{path} has no {source}: it is not a torchvision AlexNet state dict")
        mapped[key] = state[source]
    return mapped


class LPIPS(nn.Module):
    """Perceptual distance between images ``[B, 3, H, W]`` in [-1, 1] (not clamped: StarGAN v2
    scores raw generator outputs). ``random_init=True`` keeps a seeded random trunk (tests only);
    ``trust_weights=True`` accepts a ``weights`` file that is not torchvision's release."""

    def __init__(self, weights: str | Path | None = None, random_init: bool = False,
                 device: str | torch.device = "cpu", trust_weights: bool = False) -> None:
        super().__init__()
        import lpips

        with seeded_init():
            model = _package_model()
        self.weights_sha256, self.weights_verified = RANDOM_INIT, True
        if not random_init:
            resolved = resolve_weights("alexnet", weights, trust_weights)
            load_into(model.net, _trunk_state(model.net, load_state_dict(resolved), resolved.path),
                      resolved, "LPIPS AlexNet trunk")
            self.weights_sha256, self.weights_verified = resolved.sha256, resolved.verified
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        self.name = "lpips-alex"
        self.protocol = (f"lpips-alex: lpips {importlib.metadata.version('lpips')} v0.1 heads "
                         f"(sha256 {sha256_file(heads)[:16]}), [-1,1] input, no resize (bilinear to {MIN_SIZE} px when smaller), spatial mean")
        self.model = model.to(device)
        self.model.eval()
        self.model.requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # dropout in the heads must stay off

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS of each pair ``(a[i], b[i])``: ``[B]`` float32."""
        if a.shape != b.shape or a.dim() != 4 or a.size(1) != 3:
            raise ValueError(f"distance expects two image batches of the same shape [B, 3, H, W], "
                             f"got {tuple(a.shape)} and {tuple(b.shape)}")
        with torch.inference_mode():
            device = self._device()
            return self.model(_fit(a.to(device, torch.float32)), _fit(b.to(device, torch.float32))).flatten().float()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.distance(a, b)

    def mean_pairwise_lpips(self, images: Tensor) -> float:
        """Mean LPIPS over the K(K-1)/2 unordered pairs of ``images [K, 3, H, W]``.

        StarGAN v2's diversity score: K = 10 outputs for one source image gives 45 pairs. Each image
        goes through AlexNet once; only the linear heads run per pair.
        """
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"mean_pairwise_lpips expects images [K, 3, H, W], got {tuple(images.shape)}")
        k = images.size(0)
        if k < 2:
            raise ValueError(f"mean_pairwise_lpips needs at least 2 images to form a pair, got {k}")
        import lpips

        with torch.inference_mode():
            x = _fit(images.to(self._device(), torch.float32))
            # One unit-normalised feature map [K, C_l, H_l, W_l] per AlexNet layer l.
            feats = [lpips.normalize_tensor(f) for f in self.model.net(self.model.scaling_layer(x))]
            first, second = torch.triu_indices(k, k, offset=1, device=x.device)
            total = torch.zeros((), dtype=torch.float64, device=x.device)
            for start in range(0, first.numel(), PAIR_BATCH):
                i, j = first[start:start + PAIR_BATCH], second[start:start + PAIR_BATCH]
                for head, f in zip(self.model.lins, feats):
                    total += head((f[i] - f[j]) ** 2).mean(dim=(1, 2, 3)).double().sum()
            return float(total / first.numel())
