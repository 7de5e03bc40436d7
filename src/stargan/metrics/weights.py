"""Pretrained weight files of the metric networks: where they live and how they are verified.

A file is taken from an explicit path, or else from torch.hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``, where torchvision would have cached it); a file missing from that
folder is fetched on first use by :mod:`stargan.download`, as torchvision does, unless
``STARGAN_OFFLINE=1``. Its SHA-256 is checked: the hex prefix in the file name (torch.hub's own
convention) always, the full digest when it is known from several independent public records. A file
the user names and vouches for (``trust=True``, ``--trust-weights``; e.g. a mirrored or converted copy)
is used whatever its hash: its SHA-256 is printed and recorded with the results instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

RANDOM_INIT = "random-init"  # the weights_sha256 of a network built without weights (tests only)
TRUST_OPTION = "--trust-weights"  # how a user vouches for a file that is not the release (eval.trust_weights)
_CHUNK = 1 << 20             # bytes read at a time while hashing


class WeightsError(FileNotFoundError):
    """The weight file is missing or is not the expected file; the message says what to do."""


@dataclass(frozen=True)
class WeightsSpec:
    filename: str
    url: str              # where it is downloaded from (by stargan.download, or by hand)
    source: str           # one line on what the file is
    sha256: str | None    # full digest, when reliably known; the filename prefix is checked regardless

    @property
    def prefix(self) -> str:
        """The hex digits after the last ``-`` of the file name: the start of its SHA-256."""
        return Path(self.filename).stem.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Weights:
    path: Path
    sha256: str
    verified: bool = True  # False: not the release's hash, used because the user trusts the file


REGISTRY: dict[str, WeightsSpec] = {
    "inception-tf": WeightsSpec(
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        source="TF Inception (2015-12-05) ported by pytorch-fid (release 'fid_weights')",
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    ),
    "inception-torchvision": WeightsSpec(
        filename="inception_v3_google-0cc3c7bd.pth",
        url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        source="torchvision Inception v3 ImageNet weights (Inception_V3_Weights.IMAGENET1K_V1)",
        sha256=None,
    ),
    "alexnet": WeightsSpec(
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        source="torchvision AlexNet ImageNet weights (AlexNet_Weights.IMAGENET1K_V1), the LPIPS backbone",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    ),
}

_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
_announced: set[tuple[str, str]] = set()          # trusted (path, sha256) already printed, per process


def hub_dir() -> Path:
    """The folder searched when no path is given: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (memoised on path, size and mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _spec(key: str) -> WeightsSpec:
    if key not in REGISTRY:
        raise ValueError(f"unknown weights {key!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def missing_weights_error(filename: str, source: str, url: str, path: Path, explicit: bool,
                          how_to_pass: str = "the weights option of the metric",
                          how_to_fetch: str = "Nothing is downloaded automatically; get it") -> WeightsError:
    """The error for a weight file that is not there: which file, what it is, how to fetch it, where to
    get it and put it. ``path`` is where it was looked for; ``explicit`` says whether the user gave it."""
    where = (f"the path you passed, {path}, does not exist" if explicit
             else f"it is not in {path.parent}")
    return WeightsError(
        f"weight file {filename} not found: {where}.\n"
        f"It is the {source}. {how_to_fetch} from\n"
        f"  {url}\n"
        f"and put it in {hub_dir()}{os.sep} (torch.hub's checkpoint folder; set TORCH_HOME to move it),\n"
        f"or pass its path explicitly ({how_to_pass}).")


def _missing(key: str, spec: WeightsSpec, path: Path, explicit: bool) -> WeightsError:
    return missing_weights_error(
        spec.filename, spec.source, spec.url, path, explicit,
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
    candidate = Path(path).expanduser() if path is not None else hub_dir() / spec.filename
    if candidate.is_dir():
        candidate = candidate / spec.filename
    if not candidate.is_file() and not explicit:
        candidate = _fetch_on_first_use(key, spec, candidate)
    if not candidate.is_file():
        raise _missing(key, spec, candidate, explicit)

    digest = sha256_file(candidate)
    if digest.startswith(spec.sha256 or spec.prefix):
        return Weights(path=candidate, sha256=digest)
    if trust and explicit:
        return _trusted(key, spec, candidate, digest)
    raise _not_the_release(spec, candidate, digest, explicit)


def _trusted(key: str, spec: WeightsSpec, path: Path, digest: str) -> Weights:
    """A file the user vouches for: used, its SHA-256 printed once per process."""
    if (str(path), digest) not in _announced:
        _announced.add((str(path), digest))
        print(f"using {path} as the {key} weights on trust ({TRUST_OPTION}): SHA-256 {digest} "
              f"(not {spec.filename}'s); recorded with the results")
    return Weights(path=path, sha256=digest, verified=False)


def _not_the_release(spec: WeightsSpec, path: Path, digest: str, explicit: bool) -> WeightsError:
    expected = spec.sha256 or spec.prefix
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


def _fetch_on_first_use(key: str, spec: WeightsSpec, candidate: Path) -> Path:
    """Download a missing hub file, saying so in one line; offline, leave it missing."""
    from stargan import download  # lazy: stargan.download imports this module

    if download.is_offline() or key not in download.CATALOG:
        return candidate
    remote = download.CATALOG[key].files[0]
    print(f"{spec.filename} is not in {candidate.parent}: downloading it once from {remote.url} "
          f"({download.OFFLINE_ENV}=1 turns this off)")
    return download.fetch(remote, candidate.parent, name=key)


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
