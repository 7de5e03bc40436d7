"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides.

:class:`Config` describes a StarGAN v2 run and :class:`V1Config` a StarGAN v1 run; ``arch`` says
which, and :func:`config_from_dict` picks the class. Both are frozen. Presets and overrides produce new objects; training never changes one.
The resolved config is written to every run directory and stored inside every checkpoint, so a
checkpoint alone is enough to rebuild its networks.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stargan.config_rules import RULES

PRESET_DIR = Path(__file__).parent / "presets"
# The name of each section in its config (for messages such as ``optim.ema_beta=2``).
SECTION_NAMES = {"ModelConfig": "model", "LossConfig": "loss", "OptimConfig": "optim", "DataConfig": "data",
                 "TrainConfig": "train", "EvalConfig": "eval", "InitConfig": "init", "V1ModelConfig": "model",
                 "V1TrainConfig": "train", "V1LossConfig": "loss", "V1OptimConfig": "optim", "V1DataConfig": "data"}


class ConfigError(ValueError):
    """Config values out of their allowed range; the message lists every one."""


def problems(section: Any) -> list[str]:
    """``section.field=value: expected <range>`` for each field of a config section that breaks its rule."""
    rules = RULES[type(section).__name__]
    name = SECTION_NAMES[type(section).__name__]
    found = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        allowed = rules[f.name](value)
        if allowed is not None:
            found.append(f"{name}.{f.name}={value!r}: expected {allowed}")
    return found


class _Checked:
    """Sections check their fields when built, so no object with a bad value exists."""

    def __post_init__(self) -> None:
        found = problems(self)
        if found:
            raise ConfigError("invalid config: " + "; ".join(found))


@dataclass(frozen=True)
class ModelConfig(_Checked):
    img_size: int = 256        # any power of two >= 16
    num_domains: int = 2
    latent_dim: int = 16       # z
    style_dim: int = 64        # s
    hidden_dim: int = 512      # width of the mapping network's layers
    max_conv_dim: int = 512    # channel cap of G, E and D
    base_dim: int = 0          # first conv width; 0 means the paper's 2**14 // img_size
    w_hpf: float = 1.0         # high-pass filter weight; > 0 drops decoder skips and adds a block
    g_downsamples: int = 0     # G's down/up blocks; 0 means the paper's log2(img_size) - 4 (+1 w_hpf)
    g_out_norm: bool = True    # the paper's instance norm before G's output layer; false (not in the
                               # paper) lets G keep the source's colours where domains share them
    g_skips: bool = False      # not in the paper (w_hpf=0 only): U-Net skips adding the encoder's
                               # features to the decoder's at each up-sampled resolution
    g_skip_full: bool = True   # with g_skips: also the full-resolution one; false keeps the lower ones
                               # only, so that G's last block redraws the picture's fine detail
    g_residual: bool = False   # not in the paper: G's output is its input plus what its last layer draws
    masks: bool = True         # w_hpf > 0: face masks from the FAN landmark network; false opts out
    fan_weights: str = ""      # FAN weight file (wing.ckpt); default: the run's fan.safetensors, then
                               # the weights folder (torch hub's checkpoints)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.g_skips and self.w_hpf > 0:
            raise ConfigError(f"invalid config: model.g_skips=true needs model.w_hpf=0 (got {self.w_hpf}): "
                              "the high-pass face skips take the place of the U-Net skips")
        if not self.g_skip_full and not self.g_skips:
            raise ConfigError("invalid config: model.g_skip_full=false needs model.g_skips=true: it leaves "
                              "out the full-resolution U-Net skip, and without g_skips there are none")

    @property
    def first_dim(self) -> int:
        return self.base_dim or 2**14 // self.img_size


@dataclass(frozen=True)
class LossConfig(_Checked):
    lambda_reg: float = 1.0    # R1 penalty on real images
    lambda_sty: float = 1.0    # style reconstruction
    lambda_ds: float = 1.0     # diversity sensitive (initial value, decays linearly to 0)
    lambda_cyc: float = 1.0    # cycle consistency
    lambda_id: float = 0.0     # identity, not in the paper (0): |G(x, s) - x| for a style s of x's own
                               # domain, so that the style carries what tells domains apart, not colour
    ds_iter: int = 100_000     # iterations over which lambda_ds decays to 0


@dataclass(frozen=True)
class OptimConfig(_Checked):
    lr: float = 1e-4           # G, E, D
    mapping_lr: float = 1e-6   # F (the paper's f_lr)
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999    # moving average of G, F, E used for sampling
    ema_warmup: bool = False   # ramp the average's beta up from 0: min(ema_beta, (1 + t) / (10 + t))

    def adam_settings(self, network: str) -> dict[str, Any]:
        """Adam's settings for ``network`` (the mapping network has its own rate)."""
        return {"lr": self.mapping_lr if network == "mapping_network" else self.lr,
                "betas": (self.beta1, self.beta2), "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class DataConfig(_Checked):
    root: str = ""             # folder holding train/<domain>/ and val/<domain>/
    domains: tuple[str, ...] = ()  # filled from the folder names when a run starts
    batch_size: int = 8
    num_workers: int = 2
    crop_prob: float = 0.5     # probability of the random resized crop augmentation
    skip_bad_images: bool = False


@dataclass(frozen=True)
class V1TrainConfig(_Checked):
    """The training settings of both versions: StarGAN v1's whole ``train`` section."""

    total_iters: int = 100_000
    seed: int = 777
    device: str = "auto"       # auto | cpu | cuda | cuda:N
    log_every: int = 10
    sample_every: int = 5_000
    save_every: int = 10_000
    keep_last: int = 3         # checkpoints kept on disk
    num_samples: int = 8       # images per row of the sample grids
    stop_on_nonfinite: bool = True  # a NaN/Inf loss stops training (else: logged, training goes on)


@dataclass(frozen=True)
class TrainConfig(V1TrainConfig):
    """StarGAN v2's ``train`` section: the settings of both versions, then those only v2 has."""

    psi: float = 1.0           # truncation of latent-guided samples towards the mean style
    precision: str = "fp32"    # fp32 | bf16 (CPU/CUDA autocast) | fp16 (CUDA, loss scaling) | auto
                               # (bf16 where the hardware has it natively, else fp32); weights fp32
    channels_last: bool | str = False  # NHWC memory format for networks and images; auto: measured
    compile: bool | str = False  # torch.compile G, F, E and D's passes without double backward;
                                 # auto: on where a probe on this machine shows it correct and faster
    shared_passes: bool = True # reuse passes across phases where the networks are unchanged (exact);
                               # false: each phase computes its own, in every precision
    augment: str = "none"      # none | diffaugment | ada: transform every image D sees (few images)
    ada_target: float = 0.6    # ada: keep E[sign(D(real))] near this
    ada_kimg: float = 500.0    # ada: thousands of images over which p can move from 0 to 1
    ada_interval: int = 4      # ada: iterations between updates of p


# The v2-only training settings, and the values that earlier releases wrote into v1 runs' config.yaml
# (unused there): a v1 config holding exactly these still loads; any other value is refused.
V2_ONLY_TRAIN = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                 if f.name not in {g.name for g in dataclasses.fields(V1TrainConfig)}}


@dataclass(frozen=True)
class EvalConfig(_Checked):
    every: int = 0             # run the evaluation every N training iterations; 0 = never
    mode: str = "both"         # latent | reference | both
    num_outs: int = 10         # outputs per input image (LPIPS over their pairs)
    max_inputs: int = 0        # validation images per source domain; 0 = all
    backbone: str = "inception-tf"  # inception-tf | inception-torchvision | none
    weights: str = ""          # the backbone's weight file (default: the torch hub cache)
    lpips: bool = True         # LPIPS diversity (needs torchvision's AlexNet weights)
    lpips_weights: str = ""    # torchvision's AlexNet file for LPIPS (default: the torch hub cache)
    trust_weights: bool = False  # use weights / lpips_weights even when not the release's hash (recorded)
    classifier: str = ""       # a `stargan classifier train` file: accuracy and classifier-space FID
    batch_size: int = 32


@dataclass(frozen=True)
class InitConfig(_Checked):
    """Where a run started when ``stargan train --init-from`` started it from a trained model (the
    parent); written by that command, never set. Empty ``path``: the run started from scratch."""

    path: str = ""             # the parent's checkpoint directory (absolute)
    step: int = 0              # the parent's step
    sha256: str = ""           # SHA-256 of the parent's networks.safetensors
    discriminator: str = ""    # parent: D from the parent's; fresh: its usual initialisation (a release has none)
    kept: tuple[str, ...] = ()     # domains of the parent and the data: their heads, as the parent's
    new: tuple[str, ...] = ()      # domains only the data has: NAME=mean (the mean of the parent's heads),
                                   # NAME=half:PARENT_DOMAIN (halfway from that mean to a dropped domain's
                                   # heads) or NAME=copy:PARENT_DOMAIN (a copy of that domain's heads)
    dropped: tuple[str, ...] = ()  # domains only the parent has: their heads left out


class _ConfigMethods:
    """Conversion to and from plain dicts and YAML, and ``--set`` overrides, for both configs."""

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return {
            f.name: (
                {k: plain(v) for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
                if dataclasses.is_dataclass(getattr(self, f.name))
                else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ValueError(f"config is for arch {arch!r}, not {cls.arch!r}; use config_from_dict")
        return _merge(cls(), data, where="config")

    def with_overrides(self, overrides: list[str] | tuple[str, ...]):
        """Apply ``section.key=value`` strings (values parsed as YAML)."""
        updates: dict[str, Any] = {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key:
                raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.lr=2e-4")
            section, name = key.strip().split(".", 1)
            section_updates = updates.setdefault(section, {})
            if not isinstance(section_updates, dict):
                raise ValueError(f"--set: {section!r} is not a config section")
            section_updates[name] = yaml.safe_load(raw)
        return _merge(self, updates, where="--set")  # one merge: one error lists every bad value

    def save_yaml(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed into place): a crash never leaves half a config."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)

    @classmethod
    def load_yaml(cls, path: str | Path):
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(data)


@dataclass(frozen=True)
class Config(_ConfigMethods):
    """A StarGAN v2 run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    init: InitConfig = field(default_factory=InitConfig)
    preset: str = ""
    arch: str = "v2"


# ------------------------------------------------------------------------------------------------
# StarGAN v1 (Choi et al., CVPR 2018), defaults as released for CelebA at 128 px.

@dataclass(frozen=True)
class V1ModelConfig(_Checked):
    img_size: int = 128
    c_dim: int = 5             # label length of the (first) dataset: attributes or domains
    c2_dim: int = 0            # label length of the second dataset when data.mode is "both"
    g_conv_dim: int = 64       # G's first width
    d_conv_dim: int = 64       # D's first width
    g_repeat_num: int = 6      # residual blocks in G's bottleneck
    d_repeat_num: int = 6      # strided convolutions in D

    @property
    def label_dim(self) -> int:
        """Length of G's conditioning vector: c, or [c, c2, mask] when training on two datasets."""
        return self.c_dim + self.c2_dim + 2 if self.c2_dim else self.c_dim


@dataclass(frozen=True)
class V1LossConfig(_Checked):
    lambda_cls: float = 1.0    # domain classification
    lambda_rec: float = 10.0   # reconstruction (cycle)
    lambda_gp: float = 10.0    # WGAN-GP gradient penalty


@dataclass(frozen=True)
class V1OptimConfig(_Checked):
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5          # D updates per G update
    decay_start: int = 100_000 # the learning rates decay linearly to 0 from here to train.total_iters

    def adam_settings(self, network: str) -> dict[str, Any]:
        """Adam's settings for ``network`` (generator or discriminator); the learning rate is the
        undecayed one (each iteration sets the decayed rate, see ``training.v1.step.learning_rates_at``)."""
        return {"lr": self.g_lr if network == "generator" else self.d_lr, "betas": (self.beta1, self.beta2)}


@dataclass(frozen=True)
class V1DataConfig(_Checked):
    mode: str = "folders"      # celeba | folders | both
    root: str = ""             # folders: ROOT/train/<domain>/, ROOT/val/<domain>/; celeba: image folder
    attr_file: str = ""        # celeba: list_attr_celeba.txt (default: ROOT/../list_attr_celeba.txt)
    attrs: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
    exclusive: tuple[str, ...] = ("Black_Hair+Blond_Hair+Brown_Hair+Gray_Hair",)  # '+'-joined groups
    test_size: int = 2000      # celeba: the first N shuffled lines are held out as the test split
    rafd_root: str = ""        # both: the folder-per-class dataset trained alongside CelebA
    domains: tuple[str, ...] = ()  # folders: filled from the folder names when a run starts
    crop_size: int = 178       # center crop before resizing to model.img_size (0 = none)
    rafd_crop_size: int = 256  # both: the center crop of the folder dataset (RaFD), as released
    flip: bool = True          # random horizontal flip
    batch_size: int = 16
    num_workers: int = 1
    skip_bad_images: bool = False

    @property
    def crop_sizes(self) -> tuple[int, ...]:
        """The center crop of each training dataset, in label order."""
        return (self.crop_size, self.rafd_crop_size) if self.mode == "both" else (self.crop_size,)


@dataclass(frozen=True)
class V1Config(_ConfigMethods):
    """A StarGAN v1 run."""

    model: V1ModelConfig = field(default_factory=V1ModelConfig)
    loss: V1LossConfig = field(default_factory=V1LossConfig)
    optim: V1OptimConfig = field(default_factory=V1OptimConfig)
    data: V1DataConfig = field(default_factory=V1DataConfig)
    train: V1TrainConfig = field(default_factory=lambda: V1TrainConfig(total_iters=200_000, sample_every=1000,
                                                                       save_every=10_000))
    preset: str = ""
    arch: str = "v1"

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """As for v2, except that the unused v2 settings older releases saved with v1 runs are dropped."""
        data = dict(data)
        if isinstance(data.get("train"), dict):
            data["train"] = {k: v for k, v in data["train"].items()
                             if not (k in V2_ONLY_TRAIN and v == V2_ONLY_TRAIN[k])}
        return super().from_dict(data)


ARCHS = {"v2": Config, "v1": V1Config}
AnyConfig = Config | V1Config


# Settings that define the networks or the data a run trains on: a resumed run cannot change them.
FIXED_ON_RESUME = ("arch", "model.", "data.domains", "data.mode", "data.attrs", "data.exclusive", "init.")
MOVABLE_ON_RESUME = ("model.fan_weights",)  # where a file is, not what the run is


def flat_settings(config: AnyConfig) -> dict[str, Any]:
    """``{"optim.lr": 1e-4, ...}``: every setting of a config under its ``--set`` name."""
    flat = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def config_changes(old: AnyConfig, new: AnyConfig) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for each setting that differs between two configs."""
    a, b = flat_settings(old), flat_settings(new)
    return [(key, a.get(key), b.get(key)) for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def fixed_on_resume(key: str) -> bool:
    return key not in MOVABLE_ON_RESUME and any(
        key == fixed or (fixed.endswith(".") and key.startswith(fixed)) for fixed in FIXED_ON_RESUME)


def config_from_dict(data: dict[str, Any]) -> AnyConfig:
    """A :class:`Config` or :class:`V1Config`, after the dict's ``arch`` (v2 when absent)."""
    arch = (data or {}).get("arch", "v2")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    return ARCHS[arch].from_dict(data or {})


def load_config_yaml(path: str | Path) -> AnyConfig:
    return config_from_dict(yaml.safe_load(Path(path).read_text()) or {})


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> AnyConfig:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(available_presets())}")
    return dataclasses.replace(load_config_yaml(path), preset=name)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` applied, checking names and types."""
    if not isinstance(updates, dict):
        raise ValueError(f"{where}: expected a mapping, got {updates!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes, errors = {}, []
    for name, value in updates.items():
        if name == "arch" and name in fields and value != getattr(obj, name):
            raise ValueError(f"{where}: arch cannot be changed from {getattr(obj, name)!r} to {value!r}")
        if name not in fields:
            v2_only = type(obj) is V1TrainConfig and name in V2_ONLY_TRAIN
            raise ValueError(f"{where}: unknown key {name!r} in {type(obj).__name__}"
                             + (" (a StarGAN v2 setting: v1 trains in fp32, eager, on the images as they are)"
                                if v2_only else "")
                             + f"; valid keys: {', '.join(fields)}")
        current = getattr(obj, name)
        try:
            if dataclasses.is_dataclass(current):
                changes[name] = _merge(current, value or {}, where=f"{where}.{name}")
            else:
                changes[name] = _coerce(value, hints[name], f"{where}.{name}")
        except ConfigError as err:  # collect the range errors of every section before raising
            errors.append(str(err).removeprefix("invalid config: "))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item_type, _) = typing.get_args(hint)
        return tuple(_coerce(v, item_type, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list, tuple)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value
