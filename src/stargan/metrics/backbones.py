"""Feature extractors for FID and KID: two Inception v3 variants behind one interface.

``inception-tf``           the TF Inception (2015-12-05) of the FID paper, as ported by pytorch-fid, fed
                           as clean-fid's "clean" mode feeds it: its resize, the TF graph's
                           ``(x - 128) / 128`` scaling. The same features as clean-fid (and as
                           torch-fidelity on 299 px images) for the same weights: a test shows it
                           (tests/metrics/test_reference_libraries.py).
``inception-torchvision``  torchvision's ImageNet Inception v3 with the preprocessing of the released
                           StarGAN v2 evaluation, for numbers comparable to the paper's.

Both return the 2048-d pool3 features, run in eval mode under ``torch.inference_mode`` and never
download: the weights come from :func:`stargan.metrics.weights.resolve_weights`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import Tensor, nn

from stargan.metrics.weights import (RANDOM_INIT, Weights, load_into, load_state_dict, resolve_weights,
                                     seeded_init)

INCEPTION_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(nn.Module):
    """Images ``[B, 3, H, W]`` in [-1, 1] (any H = W) -> features ``[B, feature_dim]`` float32.

    Always in eval mode with frozen parameters. ``protocol`` is one line describing the
    preprocessing; it is stored in every result and in the key of cached statistics.

    On a CPU a batch goes through preprocessing and network ``cpu_chunk`` images at a time: the
    evaluation hands over a batch of inputs times outputs (320 images), whose 299 px activations
    do not fit in the caches; 16 at a time is 1.2x faster here with the folded network (1.4x
    without) and bounds the memory (benchmarks/eval_speed.py). No layer couples the images of a
    batch, so the features are the same.
    """

    name: str
    weights_sha256: str
    weights_verified: bool = True  # False: a file used on trust (--trust-weights), not the release
    protocol: str
    feature_dim: int
    net: nn.Module
    memory_format: torch.memory_format
    cpu_chunk: int = 16

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.name)
        with torch.inference_mode():
            return torch.cat([self.features(part) for part in self.chunks(x)])

    def chunks(self, x: Tensor) -> tuple[Tensor, ...]:
        """``x`` split as :meth:`forward` runs it: ``cpu_chunk`` images at a time on a CPU, else whole."""
        return x.split(self.cpu_chunk if _device(self).type == "cpu" else x.size(0))

    def features(self, x: Tensor) -> Tensor:
        """Features of one chunk of a checked batch (under inference mode)."""
        return self.net(self.preprocess(x).contiguous(memory_format=self.memory_format)).float()

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> the network's input, on its device."""
        raise NotImplementedError

    def _use(self, net: nn.Module, fold: bool) -> None:
        """Run ``net`` folded and channels-last (:func:`fold_batch_norms`), or as loaded."""
        self.net = fold_batch_norms(net.eval()) if fold else net
        self.memory_format = torch.channels_last if fold else torch.contiguous_format

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # A metric network never leaves eval mode: batch-norm statistics and dropout stay fixed.
        return super().train(False)


def describe(extractor: FeatureExtractor) -> dict[str, str | int]:
    """The identity of an extractor, as stored next to every metric value."""
    return {"extractor": extractor.name, "weights_sha256": extractor.weights_sha256,
            "weights_verified": extractor.weights_verified, "protocol": extractor.protocol,
            "feature_dim": extractor.feature_dim}


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.size(1) != 3 or x.size(2) != x.size(3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects square images of shape [B, 3, S, S] in [-1, 1], got {shape}")
    if x.size(0) == 0:
        raise ValueError(f"{name} got an empty batch; pass at least one image")


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _freeze(module: nn.Module) -> None:
    module.eval()
    module.requires_grad_(False)


def _verified(extractor: FeatureExtractor, weights: Weights) -> FeatureExtractor:
    """``extractor`` marked with whether its weight file is the release (False: used on trust)."""
    extractor.weights_verified = weights.verified
    return extractor


@torch.no_grad()
def fold_batch_norms(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that follows a bias-free conv (Inception's ``BasicConv2d``) into
    the conv's weight and bias, and lay the network out channels-last for oneDNN, in place.

    The same function of the input up to rounding: with batch norms calibrated on real-looking images
    (activations of a trained network's scale), features agree within 3e-5 relative per image and
    FID within 2e-6 (tests check 1e-4 and 1e-5); 1.5x as fast on this CPU (benchmarks/eval_speed.py).
    """
    for module in net.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.bias is None):
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight.device)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        module.conv, module.bn = fused, nn.Identity()
    return net.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# inception-tf

def to_pixels(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> float32 pixel values in [0, 255] on the CPU.

    float32 cannot hold the 8-bit level k as ``k / 127.5 - 1`` exactly, so an image whose values all
    lie within 1e-3 of 8-bit levels (every PNG through ``eval_transform``, every ``as_png`` output) is
    given exactly those levels, as clean-fid reads them from the files; any other image is kept as is.
    """
    pixels = (x.detach().cpu().double().clamp(-1, 1) + 1) * 127.5
    levels = pixels.round()
    on_levels = ((pixels - levels).abs() <= 1e-3).flatten(1).all(1)[:, None, None, None]
    return torch.where(on_levels, levels, pixels).float()


def clean_resize(pixels: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """clean-fid's resize, ``make_resizer("PIL", False, "bicubic", (size, size))``: PIL bicubic on each
    float32 channel, clipped to [0, 255], not re-quantised.

    ``pixels`` is ``[B, 3, H, W]`` in [0, 255] on the CPU; returns float32 ``[B, 3, size, size]``.
    """
    channels = pixels.float().numpy()
    out = np.empty((*channels.shape[:2], size, size), dtype=np.float32)
    for b in range(channels.shape[0]):
        for c in range(channels.shape[1]):
            channel = Image.fromarray(np.ascontiguousarray(channels[b, c]))  # mode "F": float32
            out[b, c] = np.asarray(channel.resize((size, size), Image.Resampling.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out)


def tf_inception_input(pixels: Tensor) -> Tensor:
    """The TF graph's scaling of pixels in [0, 255], as clean-fid and torch-fidelity feed it."""
    return (pixels - 128) / 128


def _tf_inception_network() -> nn.Module:
    """torchvision's Inception v3 patched into the TF graph, as ``pytorch_fid.inception.fid_inception_v3``."""
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                          transform_input=False, num_classes=1008)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class InceptionTF(FeatureExtractor):
    """TF Inception pool3 features of images prepared as clean-fid's "clean" mode prepares them."""

    def __init__(self, net: nn.Module, weights_sha256: str, fold: bool = True) -> None:
        super().__init__()
        net.fc = nn.Identity()  # the 1008-way logits are not used; the output is pool3
        self._use(net, fold)
        self.name = "inception-tf"
        self.weights_sha256 = weights_sha256
        self.protocol = ("inception-tf: clean-fid 'clean' mode (8-bit levels kept exact, PIL bicubic on "
                         f"float32 to {INCEPTION_SIZE}, clipped to [0, 255], not re-quantised; "
                         "(x - 128) / 128 input), pool3 2048-d")
        self.feature_dim = 2048
        _freeze(self)

    def preprocess(self, x: Tensor) -> Tensor:
        return tf_inception_input(clean_resize(to_pixels(x))).to(_device(self))


def _build_inception_tf(weights: str | None, random_init: bool, fold: bool, trust: bool) -> InceptionTF:
    if random_init:
        with seeded_init():
            return InceptionTF(_tf_inception_network(), RANDOM_INIT, fold)
    resolved = resolve_weights("inception-tf", weights, trust)
    net = _tf_inception_network()
    load_into(net, load_state_dict(resolved), resolved, "inception-tf")
    return _verified(InceptionTF(net, resolved.sha256, fold), resolved)


# ----------------------------------------------------------------------------------------------
# inception-torchvision

def _torchvision_inception_network() -> nn.Module:
    return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                           transform_input=False)


class InceptionTorchvision(FeatureExtractor):
    """torchvision Inception pool3 features, preprocessed as the released StarGAN v2 evaluation."""

    def __init__(self, net: nn.Module, weights_sha256: str, img_size: int, fold: bool = True) -> None:
        super().__init__()
        net.fc = nn.Identity()
        self._use(net, fold)
        self.img_size = img_size
        self.name = "inception-torchvision"
        self.weights_sha256 = weights_sha256
        self.protocol = (f"inception-torchvision: bilinear (antialiased) resize to {img_size}, then to "
                         f"{INCEPTION_SIZE}, ImageNet mean/std on [0,1] input (StarGAN v2 eval), "
                         "pool3 2048-d")
        self.feature_dim = 2048
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        _freeze(self)

    def preprocess(self, x: Tensor) -> Tensor:
        x = x.to(_device(self), torch.float32).clamp(-1, 1)
        for size in (self.img_size, INCEPTION_SIZE):
            if x.size(-1) != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)
        return ((x + 1) / 2 - self.mean) / self.std


def _build_inception_torchvision(img_size: int, weights: str | None, random_init: bool, fold: bool,
                                 trust: bool) -> InceptionTorchvision:
    if random_init:
        with seeded_init():
            return InceptionTorchvision(_torchvision_inception_network(), RANDOM_INIT, img_size, fold)
    resolved = resolve_weights("inception-torchvision", weights, trust)
    # The released file also holds the auxiliary classifier (AuxLogits.*), which is never used here.
    state = {k: v for k, v in load_state_dict(resolved).items() if not k.startswith("AuxLogits.")}
    net = _torchvision_inception_network()
    load_into(net, state, resolved, "inception-torchvision")
    return _verified(InceptionTorchvision(net, resolved.sha256, img_size, fold), resolved)


# ----------------------------------------------------------------------------------------------

EXTRACTORS = ("inception-tf", "inception-torchvision")


def build_extractor(name: str, img_size: int, weights: str | None = None, random_init: bool = False,
                    device: str | torch.device = "cpu", fold: bool = True,
                    trust_weights: bool = False) -> FeatureExtractor:
    """Build a feature extractor by name; ``weights`` is a file or folder overriding torch.hub's.

    ``random_init=True`` skips the weights (reproducibly seeded; for tests): ``weights_sha256`` is
    then ``"random-init"``. ``trust_weights=True`` accepts a ``weights`` file that is not the release
    (``weights_verified`` is then False). ``fold=False`` keeps the network as loaded, without
    :func:`fold_batch_norms` and channels-first (the same features up to rounding; for comparisons).
    """
    if img_size < 1:
        raise ValueError(f"img_size must be a positive number of pixels, got {img_size}")
    if name == "inception-tf":
        extractor: FeatureExtractor = _build_inception_tf(weights, random_init, fold, trust_weights)
    elif name == "inception-torchvision":
        extractor = _build_inception_torchvision(img_size, weights, random_init, fold, trust_weights)
    else:
        raise ValueError(f"unknown feature extractor {name!r}; valid names: {', '.join(EXTRACTORS)}")
    return extractor.to(device)
