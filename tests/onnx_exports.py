"""Tiny runs of every model kind and their ONNX exports, made once per test session and shared by the
export, runtime and serve tests (tests/test_export.py, tests/runtime/, tests/serve/test_onnx_backend.py):
exporting takes seconds, translating with the result milliseconds.

Kinds: "v2" (w_hpf 0, 16 px), "v2_style" (the same with g_out_norm=false, g_skips and g_residual),
"v2_hpf" (w_hpf 1, 64 px, with the run's own FAN weights, tuned so that the face masks are neither empty
nor full), "v1" (three folder domains) and "v1_both" (CelebA attributes and folder domains, the
two-dataset label layout).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan.checkpoints import save_checkpoint
from stargan.config import Config, DataConfig, ModelConfig, V1Config, V1DataConfig, V1ModelConfig
from stargan.export import export_onnx
from stargan.faces.weights import RUN_FAN_FILE, save_fan_state
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state, make_v1_train_state
from tests.release_fixtures import face_image, random_fan

V2 = ModelConfig(img_size=16, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16, max_conv_dim=32,
                 base_dim=8, w_hpf=0)
# The options outside the paper for style data: no output norm, U-Net skips below the full resolution
# (as cpu-style), residual output
V2_STYLE = ModelConfig(img_size=16, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16, max_conv_dim=32,
                       base_dim=8, w_hpf=0, g_downsamples=2, g_out_norm=False, g_skips=True,
                       g_skip_full=False, g_residual=True)
V2_HPF = ModelConfig(img_size=64, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16, max_conv_dim=16,
                     base_dim=8, w_hpf=1)
V1 = V1ModelConfig(img_size=16, c_dim=3, g_conv_dim=8, d_conv_dim=8, g_repeat_num=2, d_repeat_num=2)
V1_BOTH = V1ModelConfig(img_size=16, c_dim=2, c2_dim=3, g_conv_dim=8, d_conv_dim=8, g_repeat_num=2,
                        d_repeat_num=2)
CONFIGS = {
    "v2": Config(model=V2, data=DataConfig(domains=("cat", "dog"))),
    "v2_style": Config(model=V2_STYLE, data=DataConfig(domains=("sans", "serif"))),
    "v2_hpf": Config(model=V2_HPF, data=DataConfig(domains=("female", "male"))),
    "v1": V1Config(model=V1, data=V1DataConfig(mode="folders", domains=("circle", "square", "star"), crop_size=0)),
    "v1_both": V1Config(model=V1_BOTH, data=V1DataConfig(mode="both", attrs=("Blond_Hair", "Male"),
                                                         domains=("happy", "sad", "angry"), crop_size=20)),
}


def perturb(nets) -> None:
    """Non-zero biases and non-identity norms (He init leaves them 0 and 1), so every tensor counts."""
    with torch.no_grad():
        for _, net in nets.items():
            for name, p in net.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))


def masking_fan() -> torch.nn.Module:
    """A random FAN whose masks of :func:`photo` faces are partly 0, partly 1 and partly between (the
    release's random stand-in saturates them at 1)."""
    fan = random_fan(0)
    with torch.no_grad():
        fan.l0.bias.sub_(0.3)
    return fan


def write_run(kind: str, root: Path, seed: int = 0) -> Path:
    """A run directory holding one checkpoint of random (perturbed) networks of ``kind``."""
    torch.manual_seed(seed)
    config = CONFIGS[kind]
    run = root / "runs" / kind
    if config.arch == "v2":
        nets = build_networks(config.model)
        perturb(nets)
        save_checkpoint(run, make_train_state(nets, config.optim), config)
        if config.model.w_hpf > 0:
            save_fan_state(masking_fan().state_dict(), run / RUN_FAN_FILE)
    else:
        nets = build_v1_networks(config.model)
        perturb(nets)
        save_checkpoint(run, make_v1_train_state(nets, config.optim), config)
    return run


_made: dict[str, tuple[Path, Path]] = {}  # kind -> (run, export), for the whole session


def exported(kind: str, factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, export folder) of ``kind``, made on first use."""
    if kind not in _made:
        root = factory.mktemp(f"onnx-{kind}")
        run = write_run(kind, root)
        export_onnx(run, root / "export")
        _made[kind] = (run, root / "export")
    return _made[kind]


def photo(seed: int, size: int = 40, kind: str = "noise") -> Image.Image:
    """A test input: a drawn face (for the FAN) or smooth noise, not square (so resizing is exercised)."""
    if kind == "face":
        return face_image(seed, size=size).resize((size + 7, size))
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size + 7, size), Image.BICUBIC)
