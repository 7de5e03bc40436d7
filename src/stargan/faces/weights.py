"""The StarGAN v2 release's face files: FAN weights (``wing.ckpt``) and mean CelebA-HQ landmarks.

Nothing here downloads (``stargan download wing`` does). The two files are records of
:mod:`stargan.hub`. A file is taken from an explicit path (an argument or a config field), or else from
the weights folder the metrics use (torch.hub's ``checkpoints`` folder). ``wing.ckpt`` is a torch
pickle: it is read with ``weights_only=True`` (tensors only, no code) and written once beside itself as
``wing.safetensors``, which later loads use instead. The release publishes no checksums.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stargan.faces.fan import FAN, NUM_LANDMARKS
from stargan.hub import FAN_WEIGHTS, MEAN_LANDMARKS, ReleasedFile, WeightsError, hub_dir, missing_file_error

RELEASE_NAME = "wing"               # `stargan download wing` fetches both files into the weights folder
FAN_CACHE_SUFFIX = ".safetensors"
RUN_FAN_FILE = "fan.safetensors"  # FAN weights kept inside a run directory (imported releases)
FAN_HOW_TO_PASS = ("--fan-weights PATH; in a config, model.fan_weights. A w_hpf > 0 model runs without "
                   "masks only with --no-masks (model.masks: false), which is not the paper's model")
MEAN_LANDMARKS_HOW_TO_PASS = "--mean-landmarks PATH"


def _locate(file: ReleasedFile, path: str | Path | None, how_to_pass: str, cached_name: str | None = None) -> Path:
    """An explicit file (or folder holding it), else the weights folder; raises when it is missing.

    In a folder, the safetensors copy ``cached_name`` counts as the file when the file itself is gone.
    """
    explicit = path is not None and str(path) != ""
    candidate = Path(path).expanduser() if explicit else hub_dir()
    if not explicit or candidate.is_dir():
        for name in (file.filename, cached_name):
            if name and (candidate / name).is_file():
                return candidate / name
        candidate = candidate / file.filename
    if not candidate.is_file():
        raise missing_file_error(file, candidate, explicit, how_to_pass=how_to_pass,
                                 how_to_fetch=f"Fetch it with `stargan download {RELEASE_NAME}` (both face "
                                 "files of the release), or get it")
    return candidate


def find_fan_weights(path: str | Path | None = None) -> Path:
    """The FAN weight file: ``path`` (a file or a folder) when given, else the weights folder.

    Raises :class:`WeightsError`, naming the file, the release's link and where to put it.
    """
    found = _locate(FAN_WEIGHTS, path, FAN_HOW_TO_PASS, cached_name="wing" + FAN_CACHE_SUFFIX)
    cached = found.with_suffix(FAN_CACHE_SUFFIX)
    if cached != found and cached.is_file() and cached.stat().st_mtime >= found.stat().st_mtime:
        return cached  # the safetensors copy written by an earlier load (no pickle to read)
    return found


def read_fan_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The FAN tensors of ``path``: a safetensors file, a ``{'state_dict': ...}`` pickle such as
    ``wing.ckpt``, or a bare state dict. Keys FAN does not have are dropped, as the release does."""
    path = Path(path)
    if path.suffix == FAN_CACHE_SUFFIX:
        state = load_file(path)
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors come in many types
            raise WeightsError(f"cannot read {path} as FAN weights ({FAN_WEIGHTS.filename} is a torch "
                               f"file holding {{'state_dict': ...}}): {error}") from error
        state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(f"{path} holds no state dict (found {type(raw).__name__})")
    return fan_state(state, str(path))


def fan_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The tensors of the released FAN in ``state`` (from ``source``, named in errors), checked;
    a ``module.`` prefix is removed and keys FAN does not have are dropped."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = FAN().state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise WeightsError(f"{source} does not hold the released FAN (98 landmarks, one hourglass): "
                           f"{len(missing)} missing keys {missing[:3]}, wrong shapes {wrong[:3]}")
    return {k: state[k] for k in expected}


def save_fan_state(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write FAN tensors as a safetensors file (e.g. a run's ``fan.safetensors``)."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return Path(path)


def cache_as_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path | None:
    """Write ``state`` beside ``path`` as ``<stem>.safetensors``; None when the folder is read-only."""
    target = path.with_suffix(FAN_CACHE_SUFFIX)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        tmp.replace(target)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return target


def load_fan(path: str | Path | None = None, device: torch.device | str = "cpu") -> FAN:
    """The released FAN in eval mode on ``device``; weights from :func:`find_fan_weights` (``path``)."""
    found = find_fan_weights(path)
    state = read_fan_state(found)
    if found.suffix != FAN_CACHE_SUFFIX:
        cache_as_safetensors(state, found)
    fan = FAN()
    fan.load_state_dict(state)
    return fan.to(device)


def load_mean_landmarks(path: str | Path | None = None) -> np.ndarray:
    """The release's mean CelebA-HQ landmarks: 98 x 2 (x, y) pixel positions in a 256 px image."""
    found = _locate(MEAN_LANDMARKS, path, MEAN_LANDMARKS_HOW_TO_PASS)
    try:
        with np.load(found, allow_pickle=False) as data:
            mean = data["mean"]
    except (OSError, ValueError, KeyError) as error:
        raise WeightsError(f"cannot read {found} as {MEAN_LANDMARKS.filename} (a numpy .npz with "
                           f"key 'mean', {NUM_LANDMARKS} x 2): {error}") from error
    if mean.shape != (NUM_LANDMARKS, 2):
        raise WeightsError(f"{found}: 'mean' has shape {mean.shape}, expected ({NUM_LANDMARKS}, 2)")
    return mean.astype(np.float64)
