"""The tiny models and the demo data that the tests build and train, declared once.

Settings are ``section.key=value`` overrides, as ``Config.with_overrides`` and ``stargan train --set``
take them (``as_cli_flags``); later ones win. A test that depends on a value other than these adds it
as an extra override (``tiny.V2 + ["model.img_size=32"]``, ``v2_config(data, "train.total_iters=4")``).

Both versions train on 16 px images in batches of 2, log every step, sample and save every 2 steps, and
draw 3 images per sample grid. The ``demo_data`` fixture (tests/conftest.py) is ``make_demo`` once per
session: the three demo shapes at 16 px, 4 training and 2 validation images each; tests only read it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stargan.config import Config, ModelConfig, V1Config, V1ModelConfig
from stargan.data.demo import make_demo_dataset

RUN = ["data.batch_size=2", "data.num_workers=0", "train.log_every=1", "train.sample_every=2",
       "train.save_every=2", "train.num_samples=3"]

V2_MODEL = ["model.img_size=16", "model.latent_dim=4", "model.style_dim=8", "model.hidden_dim=16",
            "model.max_conv_dim=16", "model.base_dim=8", "model.w_hpf=0"]
V2 = V2_MODEL + RUN

# c_dim=3: the demo shapes; G updates every second iteration (n_critic=2), so two iterations train both
V1_MODEL = ["model.img_size=16", "model.c_dim=3", "model.g_conv_dim=8", "model.d_conv_dim=8",
            "model.g_repeat_num=1", "model.d_repeat_num=2"]
V1 = V1_MODEL + ["data.crop_size=0", "optim.n_critic=2"] + RUN


def as_cli_flags(overrides: list[str]) -> list[str]:
    """``["a.b=1", ...]`` as the command line takes it: ``["--set", "a.b=1", ...]``."""
    return [arg for item in overrides for arg in ("--set", item)]


def v2_config(data: str | Path | None = None, *extra: str) -> Config:
    """The tiny StarGAN v2 run on the dataset ``data`` (none: no data.root), then ``extra``."""
    root = [f"data.root={data}"] if data is not None else []
    return Config().with_overrides([*V2, *root, *extra])


def v1_config(data: str | Path | None = None, *extra: str) -> V1Config:
    """The tiny StarGAN v1 run on the folder dataset ``data`` (none: no data.root), then ``extra``."""
    root = [f"data.root={data}"] if data is not None else []
    return V1Config().with_overrides([*V1, *root, *extra])


def v2_model(**changes) -> ModelConfig:
    """The tiny StarGAN v2 networks (two domains unless changed)."""
    return replace(Config().with_overrides(V2_MODEL).model, **changes)


def v1_model(**changes) -> V1ModelConfig:
    """The tiny StarGAN v1 networks (three domains unless changed)."""
    return replace(V1Config().with_overrides(V1_MODEL).model, **changes)


def make_demo(out: str | Path, img_size: int = 16, train_per_domain: int = 4, val_per_domain: int = 2) -> Path:
    """The demo shapes (circle, square, triangle) in ``out``: by default the ``demo_data`` fixture's."""
    return make_demo_dataset(out, img_size=img_size, train_per_domain=train_per_domain,
                             val_per_domain=val_per_domain)
