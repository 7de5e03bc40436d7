"""Import checkpoints released with the official StarGAN v2 code into a stargan run directory.

The official files are ``torch.save``d dicts ``{'generator': sd, 'mapping_network': sd,
'style_encoder': sd[, 'discriminator': sd]}`` (``*_nets_ema.ckpt`` holds the moving averages). Our
module names match theirs, so the state dicts load unchanged; released generators lack the
``hpf.filter`` buffer, which is rebuilt from ``w_hpf``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch

from stargan.checkpoints import CheckpointError, save_checkpoint
from stargan.config import Config, ModelConfig
from stargan.nets.v2 import Networks, build_networks
from stargan.training.step import TrainState

NET_NAMES = ("generator", "mapping_network", "style_encoder", "discriminator")
DEFAULT_DOMAINS = {2: ("female", "male"), 3: ("cat", "dog", "wild")}  # CelebA-HQ, AFHQ folder order


def infer_model_config(state_dicts: dict[str, dict[str, torch.Tensor]]) -> ModelConfig:
    """Read the architecture off the tensor shapes."""
    g, f = state_dicts["generator"], state_dicts["mapping_network"]
    first_dim = g["from_rgb.weight"].shape[0]
    num_encode = len({k.split(".")[1] for k in g if k.startswith("encode.")})
    # 2**14 // img_size is the paper's first width; down blocks = log2(img_size) - 4 (+1 with w_hpf)
    img_size = 2**14 // first_dim
    w_hpf = 1.0 if num_encode - 2 > int(math.log2(img_size)) - 4 else 0.0
    heads = {k.split(".")[1] for k in f if k.startswith("unshared.")}
    last = max(int(k.split(".")[2]) for k in f if k.startswith("unshared.0."))
    conv_dims = [v.shape[0] for k, v in g.items() if k.endswith("conv1.weight")]
    return ModelConfig(img_size=img_size, num_domains=len(heads), latent_dim=f["shared.0.weight"].shape[1],
                       style_dim=f[f"unshared.0.{last}.weight"].shape[0],
                       hidden_dim=f["shared.0.weight"].shape[0], max_conv_dim=max(conv_dims), w_hpf=w_hpf)


def import_official(checkpoint: str | Path, out_dir: str | Path,
                    domains: tuple[str, ...] | None = None) -> Path:
    """Write ``out_dir`` (a run directory with one checkpoint) from an official ``.ckpt`` file."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint} not found; official files are named like "
                              "100000_nets_ema.ckpt (from the StarGAN v2 release)")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing = [n for n in NET_NAMES[:3] if n not in raw] if isinstance(raw, dict) else list(NET_NAMES[:3])
    if missing:
        raise CheckpointError(f"{checkpoint} is not an official StarGAN v2 network file: missing "
                              f"{missing} (the *_optims.ckpt file holds optimizers, not networks)")
    if not all(_is_state_dict(raw[name]) for name in NET_NAMES if name in raw):
        raise CheckpointError(f"{checkpoint} holds no network state dicts (the *_optims.ckpt file holds "
                              "optimizers, not networks; use *_nets_ema.ckpt or *_nets.ckpt)")
    state_dicts = {name: {k.removeprefix("module."): v for k, v in raw[name].items()}
                   for name in NET_NAMES if name in raw}
    model = infer_model_config(state_dicts)
    if domains is None:
        domains = DEFAULT_DOMAINS.get(model.num_domains,
                                      tuple(f"domain{i}" for i in range(model.num_domains)))
    if len(domains) != model.num_domains:
        raise ValueError(f"{len(domains)} domain names {list(domains)} given for a model with "
                         f"{model.num_domains} domains")
    config = Config(model=model)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, domains=tuple(domains)),
                                 preset=f"official:{checkpoint.name}")
    nets = build_networks(model, with_discriminator="discriminator" in state_dicts)
    for name, net in nets.items():
        sd = state_dicts[name]
        if name == "generator" and model.w_hpf > 0 and "hpf.filter" not in sd:
            sd = {**sd, "hpf.filter": net.hpf.filter}
        try:
            net.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{checkpoint}: {name} does not match the inferred {model}: {err}") from err
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_yaml(out_dir / "config.yaml")
    # Official networks serve both as "current" and as EMA weights; no optimizer state to resume from.
    ema = Networks(*(copy.deepcopy(n) for n in (nets.generator, nets.mapping_network, nets.style_encoder)))
    state = TrainState(nets=nets, ema=ema, optimizers={}, step=_step_of(checkpoint))
    return save_checkpoint(out_dir, state, config, keep_last=0)


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _step_of(checkpoint: Path) -> int:
    head = checkpoint.name.split("_")[0]
    return int(head) if head.isdigit() else 0
