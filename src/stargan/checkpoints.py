"""Checkpoints: networks as safetensors, everything else in a ``weights_only``-loadable torch file.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNN/`` holding
    networks.safetensors   StarGAN v2: generator.*, mapping_network.*, style_encoder.*, discriminator.*,
                           ema.<net>.*; StarGAN v1: generator.*, discriminator.*
    state.pt               format, step, config (with its arch), optimizer states, RNG states,
                           the augmentation's generator (and ADA's p) when train.augment is on
It is written to a temporary directory and renamed into place, so a crash never leaves a half-written
checkpoint behind, and the config it carries is enough to rebuild its networks.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stargan.config import AnyConfig, Config, V1Config, config_changes, config_from_dict, fixed_on_resume
from stargan.hub import sha256_file
from stargan.nets.v1 import Generator as V1Generator
from stargan.nets.v1 import Networks as V1Networks, build_networks as build_v1_networks
from stargan.nets.v2 import Networks, build_networks
from stargan.state import TrainState, V1TrainState

FORMAT = "stargan-v2-checkpoint/1"
V1_FORMAT = "stargan-v1-checkpoint/1"
FORMATS = {"v2": FORMAT, "v1": V1_FORMAT}  # by config.arch
STATE_TYPES = {"v2": TrainState, "v1": V1TrainState}
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or does not fit the requested configuration."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


def remove_tree(path: Path) -> None:
    """Delete a file or a directory tree (stale temporary checkpoints, pruned checkpoints)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


def run_dir_of(ckpt: Path) -> Path:
    """The run directory a checkpoint belongs to (itself for a stand-alone checkpoint directory)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt


def step_of(ckpt: Path) -> int:
    """The step in a checkpoint directory's name (``step-NNNNNN``), 0 for other names."""
    match = _STEP_DIR.match(ckpt.name)
    return int(match.group(1)) if match else 0


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
        **({"augment": state.augment.state_dict()} if getattr(state, "augment", None) is not None else {}),
    }, keep_last)


def _write_atomically(final: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                      keep_last: int) -> Path:
    """networks.safetensors and state.pt into a temporary directory, synced, then renamed to ``final``.

    A failed write (disk full) removes the temporary directory and leaves every earlier checkpoint as
    it was. Pruning keeps the newest ``keep_last`` by step, and never the one just written.
    """
    root = final.parent
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_tree(tmp)
        tmp.mkdir()
        save_file(tensors, str(tmp / "networks.safetensors"), metadata={"format": meta["format"]})
        torch.save(meta, tmp / "state.pt")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # same step saved twice (e.g. re-run after a crash): replace it
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            remove_tree(old)
        else:
            os.rename(tmp, final)
    except (OSError, RuntimeError) as err:  # safetensors and torch.save report I/O errors as either
        remove_tree(tmp)
        previous = [p.name for p in checkpoint_dirs(root.parent)]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint"
        raise CheckpointWriteError(f"cannot write checkpoint {final}: {err}; {kept}") from err
    for old in checkpoint_dirs(root.parent)[:-keep_last] if keep_last > 0 else []:
        if old != final:
            remove_tree(old)
    return final


def _read_state(ckpt: Path, mmap: bool = False) -> dict[str, Any]:
    """state.pt, checked. ``mmap=True`` for reads that only need the config: the optimizer states
    (twice the networks' size) are then mapped, not read, so `stargan sample` and `stargan eval`,
    which read the config before loading the networks, do not read them twice.

    ``weights_only=True``: a file carrying code (a pickle payload) is refused, never run.
    """
    path = ckpt / "state.pt"
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling errors come in many types
        raise _unreadable(path, "stargan state file", err) from err
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS.values():
        raise CheckpointError(f"{path} is not a stargan checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r},"
                              f" expected {' or '.join(map(repr, FORMATS.values()))}); official files go "
                              "through `stargan import-official`")
    for key in ("step", "config", "optimizers", "rng"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}: the checkpoint is incomplete or damaged")
    return meta


def read_networks(ckpt: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``ckpt/networks.safetensors`` by their saved names, on ``device``."""
    path = ckpt / "networks.safetensors"
    try:
        return load_file(str(path), device=str(device))
    except Exception as err:  # SafetensorError, OSError, ...
        raise _unreadable(path, "safetensors file", err) from err


def _unreadable(path: Path, kind: str, err: Exception) -> CheckpointError:
    """One line naming the file and the reader's own first line of complaint."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(f"cannot read {path}: not a readable {kind}, or it is truncated or corrupted "
                           f"({type(err).__name__}: {first_line[:200]})")


def _config_of(meta: dict[str, Any], ckpt: Path) -> AnyConfig:
    try:
        config = config_from_dict(meta["config"])
    except ValueError as err:
        raise CheckpointError(f"{ckpt / 'state.pt'} holds an invalid config: {err}") from err
    if FORMATS[config.arch] != meta["format"]:
        raise CheckpointError(f"{ckpt / 'state.pt'} has format {meta['format']!r} but a config for arch "
                              f"{config.arch!r}; the checkpoint is inconsistent")
    return config


def load_into(nets: Networks | V1Networks, tensors: dict[str, torch.Tensor], prefix: str,
              source: Path) -> None:
    """Load ``prefix<net>.*`` of ``tensors`` into each of ``nets``; a mismatch names ``source``."""
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


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read without its tensors."""

    checkpoint: Path
    config: AnyConfig
    step: int
    networks: tuple[str, ...]  # generator, mapping_network, ... (discriminator when it has one)
    with_optimizers: bool      # False: networks only (an imported release), nothing to resume from
    sha256: str                # of networks.safetensors


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of a run (its latest checkpoint) or of a checkpoint directory."""
    ckpt = resolve_checkpoint(path)
    meta = _read_state(ckpt, mmap=True)
    try:
        with safe_open(str(ckpt / "networks.safetensors"), framework="pt") as f:
            keys = list(f.keys())
    except Exception as err:  # SafetensorError, OSError, ...
        raise _unreadable(ckpt / "networks.safetensors", "safetensors file", err) from err
    networks = tuple(dict.fromkeys(key.split(".")[0] for key in keys if not key.startswith("ema.")))
    return CheckpointInfo(checkpoint=ckpt, config=_config_of(meta, ckpt), step=int(meta["step"]),
                          networks=networks, with_optimizers=bool(meta["optimizers"]),
                          sha256=sha256_file(ckpt / "networks.safetensors"))


def check_resume(path: str | Path, config: AnyConfig) -> tuple[Path, list[tuple[str, Any, Any]]]:
    """The checkpoint a run resumes from and the settings ``config`` changes from it, as
    ``(key, old, new)``. Refuses settings that define the networks or the data (model shape, image
    size, domains, architecture), naming each with its old and new value."""
    ckpt = resolve_checkpoint(path)
    return ckpt, _resume_changes(_config_of(_read_state(ckpt, mmap=True), ckpt), config, ckpt)


def _resume_changes(saved: AnyConfig, config: AnyConfig, ckpt: Path) -> list[tuple[str, Any, Any]]:
    if saved.arch != config.arch:
        raise CheckpointError(f"{ckpt} is a StarGAN {saved.arch} checkpoint but this run is {config.arch}; "
                              "resume it with its own config.yaml")
    # data.domains empty: not yet read from the data folder, nor the v2 domain count that follows from it
    # (both are filled in, and checked again here, before the networks are loaded)
    from_data = ("data.domains", "model.num_domains") if not config.data.domains else ()
    changes = [(key, old, new) for key, old, new in config_changes(saved, config) if key not in from_data]
    fixed = [f"{key} {old!r} -> {new!r}" for key, old, new in changes if fixed_on_resume(key)]
    if fixed:
        raise CheckpointError(f"cannot resume {ckpt} with changed settings that define the networks or the "
                              f"data: {', '.join(fixed)}; drop those --set options, or start a new run "
                              "(--run-dir NEW_DIR) to train with them")
    return changes


def restore_train_state(path: str | Path, state: TrainState | V1TrainState, config: AnyConfig,
                        restore_rng: bool = True) -> tuple[Path, list[tuple[str, Any, Any]]]:
    """Load networks (and v2's EMA networks), optimizers, step (and RNG states) into ``state``.

    Settings that may change on resume (learning rates, betas, weight decay, intervals, lambdas...)
    take effect: the optimizers get ``config``'s values. Returns the checkpoint and the changed
    settings (see :func:`check_resume`, which refuses the ones that cannot change).
    """
    ckpt = resolve_checkpoint(path)
    meta = _read_state(ckpt)  # read once: the config check and the optimizer states both come from it
    changes = _resume_changes(_config_of(meta, ckpt), config, ckpt)
    if not meta["optimizers"]:
        raise CheckpointError(f"{ckpt} holds networks only (an imported official checkpoint?), so training "
                              "cannot resume from it; sample from it with `stargan sample` instead")
    device = next(state.nets.generator.parameters()).device
    tensors = read_networks(ckpt, device)
    load_into(state.nets, tensors, "", ckpt)
    if isinstance(state, TrainState):
        load_into(state.ema, tensors, "ema.", ckpt)
    for name, opt in state.optimizers.items():
        try:
            opt.load_state_dict(meta["optimizers"][name])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{ckpt / 'state.pt'}: the {name} optimizer state does not fit: {err}") from err
        for group in opt.param_groups:  # a resumed run trains with the config's rates, betas, decay
            group.update(config.optim.adam_settings(name))
    state.step = int(meta["step"])
    if getattr(state, "augment", None) is not None and meta.get("augment"):
        state.augment.load_state_dict(meta["augment"])  # its draws go on; a run without it starts fresh
    if restore_rng:
        _set_rng_state(meta["rng"])
    return ckpt, changes


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
    tensors = read_networks(ckpt)
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else ""
    load_into(nets, tensors, prefix, ckpt)
    for _, net in nets.items():
        net.eval()
    return config, nets.to(device)


def load_v1_for_sampling(path: str | Path, device: str | torch.device = "cpu"
                         ) -> tuple[V1Config, V1Generator]:
    """Config and generator of a StarGAN v1 run or checkpoint, in eval mode."""
    ckpt, config = _sampling_config(path, "v1")
    nets = build_v1_networks(config.model, with_discriminator=False)
    load_into(nets, read_networks(ckpt), "", ckpt)
    return config, nets.generator.eval().to(device)
