"""Import checkpoints released with the official StarGAN v2 (and v1, below) code into a stargan run
directory.

The official files are ``torch.save``d dicts ``{'generator': sd, 'mapping_network': sd,
'style_encoder': sd[, 'discriminator': sd][, 'fan': sd]}`` (``*_nets_ema.ckpt`` holds the moving
averages). Our module names match theirs, so the state dicts load unchanged; released generators lack
the ``hpf.filter`` buffer, which is rebuilt from ``w_hpf``. The ``fan`` entry (the face landmark network
whose masks a ``w_hpf > 0`` generator uses) is kept as ``RUN/fan.safetensors``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import torch

from stargan.checkpoints import CheckpointError, save_checkpoint
from stargan.config import Config, ModelConfig, V1Config, V1DataConfig, V1ModelConfig
from stargan.faces.weights import RUN_FAN_FILE, fan_state, save_fan_state
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import Networks, build_networks
from stargan.state import TrainState, V1TrainState

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
    fan = fan_state(raw["fan"], f"{checkpoint} (its 'fan' entry)") if _is_state_dict(raw.get("fan")) else None
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
    ckpt = save_checkpoint(out_dir, state, config, keep_last=0)
    if fan is not None:
        save_fan_state(fan, out_dir / RUN_FAN_FILE)
    else:
        (out_dir / RUN_FAN_FILE).unlink(missing_ok=True)  # from an earlier import into the same folder
    return ckpt


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _step_of(checkpoint: Path, separator: str = "_") -> int:
    """The iteration in a released file name: ``100000_nets_ema.ckpt`` (v2), ``200000-G.ckpt`` (v1)."""
    head = checkpoint.name.split(separator)[0]
    return int(head) if head.isdigit() else 0


# ------------------------------------------------------------------------------------------------
# StarGAN v1: the release saves G and D separately, as bare state dicts (``200000-G.ckpt``,
# ``200000-D.ckpt``); our module names match, so they load unchanged.

V1_DEFAULT_IMG_SIZE = 128   # the CelebA preset's; G's weights do not depend on the image size
RAFD_DOMAINS = ("angry", "contemptuous", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
_V1_RESIDUAL = re.compile(r"^main\.(\d+)\.main\.")
_V1_D_CONV = re.compile(r"^main\.(\d+)\.weight$")


def _read_v1_state_dict(path: Path, role: str) -> dict[str, torch.Tensor]:
    """The bare state dict of the release's ``NNNNNN-{role}.ckpt`` (role "G" or "D"), checked."""
    if not path.is_file():
        raise CheckpointError(f"{path} not found; the StarGAN v1 release names its files like "
                              f"200000-{role}.ckpt")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if isinstance(raw, dict) and any(name in raw for name in NET_NAMES):
        held = sorted(n for n in NET_NAMES if n in raw)
        raise CheckpointError(f"{path} is a StarGAN v2 file (it holds {held}); import it without --model v1")
    if not _is_state_dict(raw):
        raise CheckpointError(f"{path} is not a bare state dict of tensors, which is how the StarGAN v1 "
                              f"release saves its {role} (got {type(raw).__name__}); pass NNNNNN-{role}.ckpt")
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    is_d = "conv1.weight" in sd and "conv2.weight" in sd
    if role == "G" and (is_d or "main.0.weight" not in sd):
        raise CheckpointError(f"{path} is not a StarGAN v1 generator" + (
            ": it is a discriminator; pass NNNNNN-G.ckpt first and NNNNNN-D.ckpt second" if is_d else ""))
    if role == "D" and not is_d:
        raise CheckpointError(f"{path} is not a StarGAN v1 discriminator (no conv1/conv2 heads); pass "
                              "NNNNNN-D.ckpt")
    return sd


def infer_v1_model_config(g: dict[str, torch.Tensor], d: dict[str, torch.Tensor] | None = None,
                          c_dim: int | None = None) -> V1ModelConfig:
    """Read the architecture off the tensor shapes.

    G alone fixes its widths and label length; D gives the image size (its domain head's kernel times
    2**d_repeat_num; without D the preset's 128 is assumed) and, when its c_dim + c2_dim logits are
    two fewer than G's labels, shows two-dataset training. How c_dim + c2_dim splits is not in the
    shapes: pass ``c_dim`` (the release's both-mode model has 5 CelebA attributes).
    """
    label_dim = g["main.0.weight"].shape[1] - 3
    g_repeat_num = len({m.group(1) for k in g if (m := _V1_RESIDUAL.match(k))})
    model = V1ModelConfig(img_size=V1_DEFAULT_IMG_SIZE, c_dim=label_dim,
                          g_conv_dim=g["main.0.weight"].shape[0], g_repeat_num=g_repeat_num)
    two_datasets = c_dim is not None and c_dim != label_dim
    if d is not None:
        d_repeat_num = len([k for k in d if _V1_D_CONV.match(k)])
        num_logits, _, kernel, _ = d["conv2.weight"].shape
        if num_logits not in (label_dim, label_dim - 2):
            raise CheckpointError(f"D has {num_logits} domain logits but G takes {label_dim} label channels; "
                                  "are the G and D files from the same model?")
        two_datasets = num_logits == label_dim - 2
        if not two_datasets and c_dim not in (None, label_dim):
            raise ValueError(f"c_dim={c_dim} given, but D's {num_logits} logits show one dataset of "
                             f"{label_dim} labels; leave c_dim out")
        model = dataclasses.replace(model, img_size=kernel * 2**d_repeat_num, d_repeat_num=d_repeat_num,
                                    d_conv_dim=d["main.0.weight"].shape[0])
    if not two_datasets:
        return model
    c_dim = c_dim if c_dim is not None else len(V1DataConfig().attrs)
    if not 0 < c_dim < label_dim - 2:
        raise ValueError(f"two datasets: G's {label_dim} labels are [c_dim, c2_dim, mask of 2], which "
                         f"c_dim={c_dim} does not split; pass c_dim (the first dataset's label count)")
    return dataclasses.replace(model, c_dim=c_dim, c2_dim=label_dim - 2 - c_dim)


def _v1_data_config(model: V1ModelConfig, names: tuple[str, ...] | None) -> V1DataConfig:
    """CelebA attributes (the release's 5 when c_dim is 5), then folder domains (RaFD's 8 when 8)."""
    defaults = V1DataConfig()
    num_attrs = model.c_dim if model.c2_dim or model.c_dim == len(defaults.attrs) else 0
    num_domains = model.c2_dim or (0 if num_attrs else model.c_dim)
    if names is not None and len(names) != num_attrs + num_domains:
        raise ValueError(f"{len(names)} names {list(names)} given for a model with {num_attrs} attributes "
                         f"and {num_domains} domains; give {num_attrs + num_domains} names")
    attrs = names[:num_attrs] if names is not None else defaults.attrs
    domains = (names[num_attrs:] if names is not None
               else RAFD_DOMAINS if num_domains == len(RAFD_DOMAINS)
               else ())  # unknown names: taken from the dataset's folders when sampling
    mode = "both" if model.c2_dim else "celeba" if num_attrs else "folders"
    return dataclasses.replace(defaults, mode=mode, attrs=tuple(attrs) if num_attrs else defaults.attrs,
                               domains=tuple(domains))


def import_v1_official(g_ckpt: str | Path, d_ckpt: str | Path | None = None, *, out_dir: str | Path,
                       names: tuple[str, ...] | None = None, c_dim: int | None = None) -> Path:
    """Write ``out_dir`` (a run directory with one checkpoint) from the release's ``NNNNNN-G.ckpt``
    (and optionally ``NNNNNN-D.ckpt``).

    ``names`` are the label names in G's order: CelebA attributes, then folder domains. A model with 5
    labels is taken for CelebA with the release's attributes, anything else for domain folders.
    """
    g_ckpt = Path(g_ckpt)
    g = _read_v1_state_dict(g_ckpt, "G")
    d = _read_v1_state_dict(Path(d_ckpt), "D") if d_ckpt is not None else None
    model = infer_v1_model_config(g, d, c_dim)
    config = V1Config(model=model, data=_v1_data_config(model, names), preset=f"official:{g_ckpt.name}")
    nets = build_v1_networks(model, with_discriminator=d is not None)
    for (name, net), sd in zip(nets.items(), (g, d)):
        try:
            net.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{g_ckpt if name == 'generator' else d_ckpt}: {name} does not match the "
                                  f"inferred {model}: {err}") from err
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_yaml(out_dir / "config.yaml")
    state = V1TrainState(nets=nets, optimizers={}, step=_step_of(g_ckpt, "-"))
    return save_checkpoint(out_dir, state, config, keep_last=0)
