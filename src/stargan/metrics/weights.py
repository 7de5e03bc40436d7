"""Pretrained weight files of the metric networks: where they live and how they are verified.

A file is taken from an explicit path, or else from torch.hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``, where torchvision would have cached it); a file missing from that
folder is fetched on first use by :func:`stargan.hub.fetch`, as torchvision does, unless
``STARGAN_OFFLINE=1``. Its SHA-256 is checked: the hex prefix in the file name (torch.hub's own
convention) always, the full digest when it is known from several independent public records. A file
the user names and vouches for (``trust=True``, ``--trust-weights``; e.g. a mirrored or converted copy)
is used whatever its hash: its SHA-256 is printed and recorded with the results instead.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stargan.hub import (ALEXNET, INCEPTION_TF, INCEPTION_TORCHVISION, OFFLINE_ENV, ReleasedFile, WeightsError,
                         fetch, is_offline, missing_file_error, sha256_file)

RANDOM_INIT = "random-init"  # the weights_sha256 of a network built without weights (tests only)
TRUST_OPTION = "--trust-weights"  # how a user vouches for a file that is not the release (eval.trust_weights)


@dataclass(frozen=True)
class Weights:
    path: Path
    sha256: str
    verified: bool = True  # False: not the release's hash, used because the user trusts the file


# The metric networks' files, by the name `stargan download` fetches them under.
REGISTRY: dict[str, ReleasedFile] = {
    "inception-tf": INCEPTION_TF,
    "inception-torchvision": INCEPTION_TORCHVISION,
    "alexnet": ALEXNET,
}

_announced: set[tuple[str, str]] = set()  # trusted (path, sha256) already printed, per process


def _spec(key: str) -> ReleasedFile:
    if key not in REGISTRY:
        raise ValueError(f"unknown weights {key!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def _missing(key: str, spec: ReleasedFile, path: Path, explicit: bool) -> WeightsError:
    return missing_file_error(
        spec, path, explicit, how_to_pass="the weights option of the metric",
        how_to_fetch=f"Fetch it with `stargan download {key}` (done automatically on first use\n"
                     f"unless STARGAN_OFFLINE=1 or --offline), or get it")


def resolve_weights(key: str, path: str | Path | None = None, trust: bool = False) -> Weights:
    """Find and verify the weight file ``key`` of :data:`REGISTRY`.

    ``path`` (a file, or a folder holding the file under its registry name) wins over torch.hub's
    checkpoint folder. Raises :class:`WeightsError` when the file is missing or its hash is wrong,
    unless ``trust`` and the file was named by ``path``: it is then used with ``verified=False``,
    and its SHA-256 printed once.
    """
    spec = _spec(key)
    explicit = path is not None
    candidate = Path(path).expanduser() if path is not None else spec.path()
    if candidate.is_dir():
        candidate = candidate / spec.filename
    if not candidate.is_file() and not explicit:
        candidate = _fetch_on_first_use(key, spec, candidate)
    if not candidate.is_file():
        raise _missing(key, spec, candidate, explicit)

    digest = sha256_file(candidate)
    if spec.pinned and digest.startswith(spec.pinned):
        return Weights(path=candidate, sha256=digest)
    if trust and explicit:
        return _trusted(key, spec, candidate, digest)
    raise _not_the_release(spec, candidate, digest, explicit)


def _trusted(key: str, spec: ReleasedFile, path: Path, digest: str) -> Weights:
    """A file the user vouches for: used, its SHA-256 printed once per process."""
    if (str(path), digest) not in _announced:
        _announced.add((str(path), digest))
        print(f"using {path} as the {key} weights on trust ({TRUST_OPTION}): SHA-256 {digest} "
              f"(not {spec.filename}'s); recorded with the results")
    return Weights(path=path, sha256=digest, verified=False)


def _not_the_release(spec: ReleasedFile, path: Path, digest: str, explicit: bool) -> WeightsError:
    expected = spec.pinned
    what = "SHA-256" if spec.sha256 else f"SHA-256 prefix (from the name {spec.filename})"
    trust_hint = (f"If it is a file you trust (a local mirror, a converted copy), pass {TRUST_OPTION} "
                  "(eval.trust_weights=true) to use it anyway: its SHA-256 is then recorded with the results."
                  if explicit else
                  f"To use a file of your own, pass its path (--weights / --lpips-weights) with "
                  f"{TRUST_OPTION}.")
    return WeightsError(
        f"weight file {path} is not {spec.filename}: expected {what} {expected}, "
        f"got {digest}. The file is corrupt, truncated or a different file; "
        f"download it again from {spec.url}. {trust_hint}")


def _fetch_on_first_use(key: str, spec: ReleasedFile, candidate: Path) -> Path:
    """Download a missing hub file, saying so in one line; offline, leave it missing."""
    if is_offline():
        return candidate
    print(f"{spec.filename} is not in {candidate.parent}: downloading it once from {spec.url} "
          f"({OFFLINE_ENV}=1 turns this off)")
    return fetch(spec, candidate.parent, name=key)


def load_state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    """Load a verified weight file as a state dict on the CPU (``weights_only``: no pickled code)."""
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsError(f"{weights.path} does not hold a state dict (found {type(state).__name__})")
    return state


def load_into(net: nn.Module, state: dict[str, torch.Tensor], weights: Weights, name: str) -> None:
    """``net.load_state_dict(state)`` (strict), with an error that names the file."""
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"{weights.path} does not fit the {name} network: {error}") from error


@contextlib.contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """Make random initialisation reproducible without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
