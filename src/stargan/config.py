"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides.

A :class:`Config` is frozen. Presets and overrides produce new objects; training never changes one.
The resolved config is written to every run directory and stored inside every checkpoint, so a
checkpoint alone is enough to rebuild its networks.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class ModelConfig:
    img_size: int = 256        # any power of two >= 16
    num_domains: int = 2
    latent_dim: int = 16       # z
    style_dim: int = 64        # s
    hidden_dim: int = 512      # width of the mapping network's layers
    max_conv_dim: int = 512    # channel cap of G, E and D
    base_dim: int = 0          # first conv width; 0 means the paper's 2**14 // img_size
    w_hpf: float = 1.0         # high-pass filter weight; > 0 drops decoder skips and adds a block
    g_downsamples: int = 0     # G's down/up blocks; 0 means the paper's log2(img_size) - 4 (+1 w_hpf)

    @property
    def first_dim(self) -> int:
        return self.base_dim or 2**14 // self.img_size


@dataclass(frozen=True)
class LossConfig:
    lambda_reg: float = 1.0    # R1 penalty on real images
    lambda_sty: float = 1.0    # style reconstruction
    lambda_ds: float = 1.0     # diversity sensitive (initial value, decays linearly to 0)
    lambda_cyc: float = 1.0    # cycle consistency
    ds_iter: int = 100_000     # iterations over which lambda_ds decays to 0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4           # G, E, D
    mapping_lr: float = 1e-6   # F (the paper's f_lr)
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999    # moving average of G, F, E used for sampling


@dataclass(frozen=True)
class DataConfig:
    root: str = ""             # folder holding train/<domain>/ and val/<domain>/
    domains: tuple[str, ...] = ()  # filled from the folder names when a run starts
    batch_size: int = 8
    num_workers: int = 2
    crop_prob: float = 0.5     # probability of the random resized crop augmentation
    skip_bad_images: bool = False


@dataclass(frozen=True)
class TrainConfig:
    total_iters: int = 100_000
    seed: int = 777
    device: str = "auto"       # auto | cpu | cuda | cuda:N
    log_every: int = 10
    sample_every: int = 5_000
    save_every: int = 10_000
    keep_last: int = 3         # checkpoints kept on disk
    num_samples: int = 8       # images per row of the sample grids
    psi: float = 1.0           # truncation of latent-guided samples towards the mean style


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""

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
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _merge(cls(), data, where="config")

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> "Config":
        """Apply ``section.key=value`` strings (values parsed as YAML)."""
        config = self
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key:
                raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.lr=2e-4")
            section, name = key.strip().split(".", 1)
            config = _merge(config, {section: {name: yaml.safe_load(raw)}}, where="--set")
        return config

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> "Config":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(data)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Config:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(available_presets())}")
    data = yaml.safe_load(path.read_text()) or {}
    return dataclasses.replace(Config.from_dict(data), preset=name)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` applied, checking names and types."""
    if not isinstance(updates, dict):
        raise ValueError(f"{where}: expected a mapping, got {updates!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for name, value in updates.items():
        if name not in fields:
            raise ValueError(f"{where}: unknown key {name!r} in {type(obj).__name__}; "
                             f"valid keys: {', '.join(fields)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            changes[name] = _merge(current, value or {}, where=f"{where}.{name}")
        else:
            changes[name] = _coerce(value, hints[name], f"{where}.{name}")
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
