"""Checkpoints: networks as safetensors, everything else in a ``weights_only``-loadable torch file.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNN/`` holding
    networks.safetensors   StarGAN v2: generator.*, mapping_network.*, style_encoder.*, discriminator.*,
                           ema.<net>.*; StarGAN v1: generator.*, discriminator.*
    state.pt               format, step, config (with its arch), optimizer states, RNG states
It is written to a temporary directory and renamed into place, so a crash never leaves a half-written
checkpoint behind, and the config it carries is enough to rebuild its networks.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stargan.config import AnyConfig, Config, V1Config, config_from_dict
from stargan.nets.v1 import Generator as V1Generator
from stargan.nets.v1 import V1Networks, build_v1_networks
from stargan.nets.v2 import Networks, build_networks
from stargan.training.step_v2 import TrainState
from stargan.training.step_v1 import V1TrainState

FORMAT = "stargan-v2-checkpoint/1"
V1_FORMAT = "stargan-v1-checkpoint/1"
FORMATS = {"v2": FORMAT, "v1": V1_FORMAT}  # by config.arch
STATE_TYPES = {"v2": TrainState, "v1": V1TrainState}
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or does not fit the requested configuration."""


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "state.pt").is_file()]
    return [p for _, p in sorted(found)]


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint directory or a run directory (its latest checkpoint)."""
    path = Path(path)
    if (path / "state.pt").is_file() and (path / "networks.safetensors").is_file():
        return path
    found = checkpoint_dirs(path)
    if found:
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run directory or a checkpoint directory")
    raise CheckpointError(f"no checkpoint in {path}: expected {path}/checkpoints/step-NNNNNN/ or "
                          f"{path}/state.pt with networks.safetensors (train first, or check the path)")


def _rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": [py_version, py_gauss],
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_meta": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py_version, py_gauss = state["python_meta"]
    random.setstate((py_version, tuple(int(v) for v in state["python"].tolist()), py_gauss))
    np_name, np_pos, np_has_gauss, np_gauss = state["numpy_meta"]
    np.random.set_state((np_name, state["numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss,
                         np_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _network_tensors(state: TrainState | V1TrainState) -> dict[str, torch.Tensor]:
    groups = [("", state.nets)] + ([("ema.", state.ema)] if isinstance(state, TrainState) else [])
    tensors = {}
    for prefix, nets in groups:
        for name, net in nets.items():
            for key, value in net.state_dict().items():
                tensors[f"{prefix}{name}.{key}"] = value.detach().contiguous()
    return tensors


def save_checkpoint(run_dir: str | Path, state: TrainState | V1TrainState, config: AnyConfig,
                    keep_last: int = 3) -> Path:
    """Write ``RUN/checkpoints/step-NNNNNN`` atomically and delete all but the newest ``keep_last``.

    The format (StarGAN v1 or v2) follows ``config.arch``; ``state`` must be of the same arch.
    """
    if not isinstance(state, STATE_TYPES[config.arch]):
        raise TypeError(f"a {config.arch} config needs a {STATE_TYPES[config.arch].__name__}, "
                        f"got {type(state).__name__}")
    return _write_atomically(checkpoint_path(run_dir, state.step), _network_tensors(state), {
        "format": FORMATS[config.arch],
        "step": state.step,
        "config": config.to_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in state.optimizers.items()},
        "rng": _rng_state(),
    }, keep_last)


def _write_atomically(final: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                      keep_last: int) -> Path:
    """networks.safetensors and state.pt into a temporary directory, synced, then renamed to ``final``."""
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / "networks.safetensors"), metadata={"format": meta["format"]})
    torch.save(meta, tmp / "state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # same step saved twice (e.g. re-run after a crash): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in checkpoint_dirs(root.parent)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read_state(ckpt: Path, mmap: bool = False) -> dict[str, Any]:
    """state.pt, checked. ``mmap=True`` for reads that only need the config: the optimizer states
    (twice the networks' size) are then mapped, not read, so `stargan sample` and `stargan eval`,
    which read the config before loading the networks, do not read them twice."""
    try:
        meta = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {ckpt / 'state.pt'}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS.values():
        raise CheckpointError(f"{ckpt / 'state.pt'} is not a stargan checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r},"
                              f" expected {' or '.join(map(repr, FORMATS.values()))}); official files go "
                              "through `stargan import-official`")
    return meta


def _config_of(meta: dict[str, Any], ckpt: Path) -> AnyConfig:
    try:
        config = config_from_dict(meta["config"])
    except ValueError as err:
        raise CheckpointError(f"{ckpt / 'state.pt'} holds an invalid config: {err}") from err
    if FORMATS[config.arch] != meta["format"]:
        raise CheckpointError(f"{ckpt / 'state.pt'} has format {meta['format']!r} but a config for arch "
                              f"{config.arch!r}; the checkpoint is inconsistent")
    return config


def _load_into(nets: Networks | V1Networks, tensors: dict[str, torch.Tensor], prefix: str,
               source: Path) -> None:
    for name, net in nets.items():
        head = f"{prefix}{name}."
        sub = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
        try:
            net.load_state_dict(sub)
        except RuntimeError as err:
            raise CheckpointError(f"{source}: {prefix}{name} does not match its config: {err}") from err


def load_config(path: str | Path) -> AnyConfig:
    """The config stored inside a checkpoint (or a run's latest checkpoint); ``.arch`` tells v1 from v2."""
    ckpt = resolve_checkpoint(path)
    return _config_of(_read_state(ckpt, mmap=True), ckpt)


def restore_train_state(path: str | Path, state: TrainState | V1TrainState, config: AnyConfig,
                        restore_rng: bool = True) -> Path:
    """Load networks (and v2's EMA networks), optimizers, step (and RNG states) into ``state``.

    Refuses a checkpoint of the other arch or whose model config differs from ``config.model``.
    """
    ckpt = resolve_checkpoint(path)
    meta = _read_state(ckpt)
    saved = _config_of(meta, ckpt)
    if saved.arch != config.arch:
        raise CheckpointError(f"{ckpt} is a StarGAN {saved.arch} checkpoint but this run is {config.arch}; "
                              "resume it with its own config.yaml")
    if saved.model != config.model:
        raise CheckpointError(f"{ckpt} was trained with model config {saved.model}, "
                              f"which differs from the requested {config.model}")
    if not meta["optimizers"]:
        raise CheckpointError(f"{ckpt} holds networks only (an imported official checkpoint?), so training "
                              "cannot resume from it; sample from it with `stargan sample` instead")
    device = next(state.nets.generator.parameters()).device
    tensors = load_file(str(ckpt / "networks.safetensors"), device=str(device))
    _load_into(state.nets, tensors, "", ckpt)
    if isinstance(state, TrainState):
        _load_into(state.ema, tensors, "ema.", ckpt)
    for name, opt in state.optimizers.items():
        opt.load_state_dict(meta["optimizers"][name])
    state.step = int(meta["step"])
    if restore_rng:
        _set_rng_state(meta["rng"])
    return ckpt


def _sampling_config(path: str | Path, arch: str) -> tuple[Path, AnyConfig]:
    ckpt = resolve_checkpoint(path)
    config = _config_of(_read_state(ckpt, mmap=True), ckpt)
    if config.arch != arch:
        loader = "load_v1_for_sampling" if config.arch == "v1" else "load_for_sampling"
        raise CheckpointError(f"{ckpt} is a StarGAN {config.arch} checkpoint, not {arch}; load it with "
                              f"stargan.checkpoints.{loader}")
    return ckpt, config


def load_for_sampling(path: str | Path, device: str | torch.device = "cpu") -> tuple[Config, Networks]:
    """Config and EMA networks (G, F, E; no discriminator) of a StarGAN v2 run or checkpoint, in eval mode."""
    ckpt, config = _sampling_config(path, "v2")
    nets = build_networks(config.model, with_discriminator=False)
    tensors = load_file(str(ckpt / "networks.safetensors"), device="cpu")
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else ""
    _load_into(nets, tensors, prefix, ckpt)
    for _, net in nets.items():
        net.eval()
    return config, nets.to(device)


def load_v1_for_sampling(path: str | Path, device: str | torch.device = "cpu"
                         ) -> tuple[V1Config, V1Generator]:
    """Config and generator of a StarGAN v1 run or checkpoint, in eval mode."""
    ckpt, config = _sampling_config(path, "v1")
    nets = build_v1_networks(config.model, with_discriminator=False)
    _load_into(nets, load_file(str(ckpt / "networks.safetensors"), device="cpu"), "", ckpt)
    return config, nets.generator.eval().to(device)
