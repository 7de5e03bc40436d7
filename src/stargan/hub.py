"""Released files: one record per file, the folder they go to, how they are verified and fetched.

A released file (a metric network's weights, a released model, the release's face files, a dataset zip)
is one :class:`ReleasedFile`: its name, where it is published, how it is checked, its licence. Files go
to torch.hub's checkpoint folder (:func:`hub_dir`, ``$TORCH_HOME/hub/checkpoints``) unless a folder is
given. :func:`fetch` streams a file to ``NAME.part`` beside its destination with a progress bar, resumes
with an HTTP Range request after a dropped connection (or in a later run), verifies it (SHA-256 where it
is known, otherwise a structural check, and the digest printed so it can be pinned), then renames it into
place in one step. A lock file makes concurrent downloads of one file wait for each other.
``STARGAN_OFFLINE=1`` (``--offline`` on the command line) turns every fetch into an error that says what
to fetch by hand. :data:`RELEASES` lists what ``stargan download NAME`` fetches.

This module is at the ground: it imports nothing else of stargan.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

CHUNK = 1 << 20       # bytes read (from a file or a connection) at a time
RETRIES = 3           # resumed attempts after a dropped connection, within one call
TIMEOUT_S = 60        # seconds without a byte before the connection counts as dropped
OFFLINE_ENV = "STARGAN_OFFLINE"
LICENCE_PREFIX = "# licence:"   # the config.yaml comment of a run imported by `stargan download`
# The first bytes of a legacy (non-zip) torch.save file: pickle protocol 2, then torch's magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_FORMATS = {"torch": "a torch checkpoint", "zip": "a zip archive", "npz": "a numpy .npz file"}


class WeightsError(FileNotFoundError):
    """A released file is missing or is not the expected file; the message says what to do."""


class DownloadError(WeightsError):
    """A file could not be fetched or verified; the message says what to do instead."""


@dataclass(frozen=True)
class ReleasedFile:
    """One file a release publishes: what it is, where it comes from, how it is checked, where it goes."""
    filename: str          # its name in the hub folder (or the folder it is fetched into)
    url: str               # where it is published
    sha256: str | None     # full digest when reliably known; else the name's hex prefix, else `kind`, is checked
    about: str             # one line on what it is (named in messages)
    licence: str           # the publisher's terms (printed by `stargan download`, shown by `stargan serve`)
    kind: str = "torch"    # the format checked when no hash is known: "torch" (torch.save), "zip", "npz"
    size: str = "?"        # for `stargan download --list` (approximate; the releases publish no sizes)

    @property
    def prefix(self) -> str:
        """The hex digits after the last ``-`` of the file name: the start of its SHA-256 (torch.hub's
        convention); empty when the name carries none."""
        stem = Path(self.filename).stem
        tail = stem.rsplit("-", 1)[-1]
        return tail if "-" in stem and re.fullmatch(r"[0-9a-f]{8,64}", tail) else ""

    @property
    def pinned(self) -> str:
        """What the file's SHA-256 must start with (the digest or the name's prefix); empty: unpublished."""
        return self.sha256 or self.prefix

    def path(self, folder: str | Path | None = None) -> Path:
        """Where the file goes: ``folder`` when given, else the hub folder."""
        return (Path(folder) if folder is not None else hub_dir()) / self.filename


@dataclass(frozen=True)
class Release:
    """What ``stargan download NAME`` fetches, and what it makes of it."""
    files: tuple[ReleasedFile, ...]
    source: str                 # one line: what it is, from where
    model: str = ""             # "v2" / "v1": imported into RUNS/<name>-official after the download
    also: tuple[str, ...] = ()  # names fetched along with this one
    dataset: str = ""           # a zip of train/val domain folders, unpacked into DATA/<dataset>

    @property
    def licence(self) -> str:
        """The licence of its files (one per release)."""
        return self.files[0].licence


# ------------------------------------------------------------------------------------------------
# The registry: every file a release publishes, once.

def _dropbox(code: str, name: str) -> str:
    return f"https://www.dropbox.com/s/{code}/{name}?dl=1"  # dl=1: the file, not the preview page


_V2_LICENCE = "CC BY-NC 4.0 (NAVER Corp.): non-commercial use only"
_V1_LICENCE = ("MIT (StarGAN v1 release, yunjey/stargan); trained on CelebA, whose terms are non-commercial "
               "research")
_TORCHVISION = "BSD-3-Clause (torchvision)"
_V2 = "StarGAN v2 release (clovaai/stargan-v2)"

INCEPTION_TF = ReleasedFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    about="TF Inception (2015-12-05) ported by pytorch-fid (release 'fid_weights')",
    licence="Apache-2.0 (pytorch-fid's port of the TF Inception graph)", size="~91 MiB")
INCEPTION_TORCHVISION = ReleasedFile(
    "inception_v3_google-0cc3c7bd.pth", "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    sha256=None, about="torchvision Inception v3 ImageNet weights (Inception_V3_Weights.IMAGENET1K_V1)",
    licence=_TORCHVISION, size="~104 MiB")
ALEXNET = ReleasedFile(
    "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    about="torchvision AlexNet ImageNet weights (AlexNet_Weights.IMAGENET1K_V1), the LPIPS backbone",
    licence=_TORCHVISION, size="~233 MiB")
FAN_WEIGHTS = ReleasedFile(
    "wing.ckpt", _dropbox("tjxpypwpt38926e", "wing.ckpt"), sha256=None,
    about="FAN face landmark network of the StarGAN v2 release (CC BY-NC 4.0); models with w_hpf > 0 "
          "(CelebA-HQ) compute their high-pass face masks with it",
    licence=_V2_LICENCE)
MEAN_LANDMARKS = ReleasedFile(
    "celeba_lm_mean.npz", _dropbox("91fth49gyb7xksk", "celeba_lm_mean.npz"), sha256=None,
    about="mean CelebA-HQ face landmarks of the StarGAN v2 release (CC BY-NC 4.0), the target of "
          "'stargan align'",
    licence=_V2_LICENCE, kind="npz")


def _one(filename: str, url: str, about: str, licence: str, kind: str = "torch", *, model: str = "",
         also: tuple[str, ...] = (), dataset: str = "") -> Release:
    """A release of one unpinned file (the StarGAN releases publish no hashes)."""
    file = ReleasedFile(filename, url, sha256=None, about=about, licence=licence, kind=kind)
    return Release(files=(file,), source=about, model=model, also=also, dataset=dataset)


RELEASES: dict[str, Release] = {
    "celeba_hq": _one("stargan-v2-celeba_hq-100000_nets_ema.ckpt", _dropbox("96fmei6c93o8b8t", "100000_nets_ema.ckpt"),
                      f"{_V2}: CelebA-HQ model, 256 px, female/male, w_hpf 1", _V2_LICENCE, model="v2",
                      also=("wing",)),
    "afhq": _one("stargan-v2-afhq-100000_nets_ema.ckpt", _dropbox("etwm810v25h42sn", "100000_nets_ema.ckpt"),
                 f"{_V2}: AFHQ model, 256 px, cat/dog/wild", _V2_LICENCE, model="v2"),
    "wing": Release(files=(FAN_WEIGHTS, MEAN_LANDMARKS),
                    source=f"{_V2}: FAN face landmark network and mean CelebA-HQ landmarks (masks)"),
    "celeba128": _one("stargan-v1-celeba-128x128-5attrs.zip", _dropbox("7e966qq0nlxwte4", "celeba-128x128-5attrs.zip"),
                      "StarGAN v1 release: CelebA model, 128 px, 5 attributes", _V1_LICENCE, "zip", model="v1"),
    "celeba256": _one("stargan-v1-celeba-256x256-5attrs.zip", _dropbox("zdq6roqf63m0v5f", "celeba-256x256-5attrs.zip"),
                      "StarGAN v1 release: CelebA model, 256 px, 5 attributes", _V1_LICENCE, "zip", model="v1"),
    "afhq-data": _one("stargan-v2-afhq-data.zip", _dropbox("t9l9o3vsx2jai3z", "afhq.zip"),
                      f"{_V2}: AFHQ dataset, train/val x cat/dog/wild, 512 px", _V2_LICENCE, "zip", dataset="afhq"),
    "celeba_hq-data": _one("stargan-v2-celeba_hq-data.zip", _dropbox("f7pvjij2xlpff59", "celeba_hq.zip"),
                           f"{_V2}: CelebA-HQ dataset, train/val x female/male",
                           "CelebA-HQ follows CelebA's terms: non-commercial research only", "zip",
                           dataset="celeba_hq"),
    "inception-tf": Release(files=(INCEPTION_TF,), source=INCEPTION_TF.about),
    "inception-torchvision": Release(files=(INCEPTION_TORCHVISION,), source=INCEPTION_TORCHVISION.about),
    "alexnet": Release(files=(ALEXNET,), source=ALEXNET.about),
}


def released_file(filename: str) -> ReleasedFile | None:
    """The record of the file a release publishes as ``filename`` (None when none does)."""
    for release in RELEASES.values():
        for file in release.files:
            if file.filename == filename:
                return file
    return None


def release_licence(preset: str) -> str:
    """The licence of the released file a run was imported from, when its preset names one
    (``official:FILE``, as a v2 model imported by `stargan download`); empty otherwise."""
    file = released_file(preset.removeprefix("official:")) if preset.startswith("official:") else None
    return file.licence if file is not None else ""


def recorded_licence(run_dir: Path) -> str:
    """The licence line a download wrote into ``config.yaml`` (empty when none): how the runs of the v1
    releases, whose preset names the G file taken out of the zip, say theirs."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        return ""
    for line in config.read_text().splitlines():
        if line.startswith(LICENCE_PREFIX):
            return line[len(LICENCE_PREFIX):].strip()
    return ""


UNRECORDED_LICENCE = ("not recorded: imported from an official release; see its licence before any use "
                      "(the StarGAN v2 models are CC BY-NC 4.0, non-commercial)")


def run_licence(preset: str, run_dir: Path) -> str:
    """The licence of a run imported from a release (its preset's file, else the line in config.yaml),
    :data:`UNRECORDED_LICENCE` for an official import that says none; empty for the user's own runs."""
    licence = release_licence(preset) or recorded_licence(run_dir)
    if not licence and preset.startswith("official:"):
        return UNRECORDED_LICENCE
    return licence


# ------------------------------------------------------------------------------------------------
# The hub folder, hashes, the offline switch.

_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def hub_dir() -> Path:
    """The folder released files go to and are looked for in: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (memoised on path, size and mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def is_offline() -> bool:
    """``STARGAN_OFFLINE`` is set (``--offline`` sets it): nothing is downloaded."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def missing_file_error(file: ReleasedFile, path: Path, explicit: bool, *, how_to_pass: str,
                       how_to_fetch: str) -> WeightsError:
    """The error for a released file that is not there: which file, what it is, how to fetch it, where
    to get it and put it. ``path`` is where it was looked for; ``explicit`` says whether the user gave it."""
    where = (f"the path you passed, {path}, does not exist" if explicit
             else f"it is not in {path.parent}")
    return WeightsError(
        f"weight file {file.filename} not found: {where}.\n"
        f"It is the {file.about}. {how_to_fetch} from\n"
        f"  {file.url}\n"
        f"and put it in {hub_dir()}{os.sep} (torch.hub's checkpoint folder; set TORCH_HOME to move it),\n"
        f"or pass its path explicitly ({how_to_pass}).")


def verify(path: Path, file: ReleasedFile) -> str:
    """The SHA-256 of ``path``, after checking it against ``file``'s known digest, or else its format."""
    digest = sha256_file(path)
    if file.pinned:
        if not digest.startswith(file.pinned):
            raise DownloadError(f"{file.filename}: wrong SHA-256 {digest} (expected {file.pinned}): a "
                                f"different or damaged file (source {file.url})")
        return digest
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if not (zipfile.is_zipfile(path) or (file.kind == "torch" and head == _LEGACY_TORCH_MAGIC)):
        looks = " (it looks like a web page)" if head.lstrip().lower().startswith(b"<") else ""
        raise DownloadError(f"{file.filename} is not {_FORMATS[file.kind]}{looks}; check {file.url} in a browser")
    return digest


# ------------------------------------------------------------------------------------------------
# One file: stream, resume, verify, rename.

def fetch(file: ReleasedFile, folder: str | Path | None = None, *, name: str = "", progress: bool = True,
          retries: int = RETRIES) -> Path:
    """``folder/file.filename`` (the hub folder by default), downloaded unless a verified copy is there.
    ``name`` is the ``stargan download`` name that fetches it, for the offline message."""
    final = file.path(folder)
    if is_offline():
        if final.is_file():
            verify(final, file)
            return final
        raise DownloadError(f"{final.name} is needed but {OFFLINE_ENV} is set (or --offline was given), so "
                            f"nothing is downloaded. Fetch it on a connected machine with "
                            f"`stargan download {name or file.filename}` (or from {file.url}) and put it "
                            f"in {final.parent}{os.sep}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.with_name(f"{file.filename}.lock")):
        if final.is_file():
            try:
                verify(final, file)
                return final  # there already, or finished by a concurrent download we waited for
            except DownloadError as error:
                print(f"{final} exists but {error}; downloading it again")
                final.unlink()
        part = final.with_name(f"{file.filename}.part")
        _download(file, part, progress, retries)
        try:
            digest = verify(part, file)
        except DownloadError as error:
            part.unlink()
            raise DownloadError(f"{error}; the download was deleted") from None
        if not file.pinned:
            print(f"{file.filename}: sha256 {digest} (the release publishes no hash; keep it to compare)")
        os.replace(part, final)  # atomic: readers see no file or the whole, verified file
    return final


def _download(file: ReleasedFile, part: Path, progress: bool, retries: int) -> None:
    """Stream ``file`` into ``part``, resuming after each dropped connection, ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            _stream(file, part, progress)
            return
        except (http.client.HTTPException, ConnectionError, TimeoutError, _Incomplete,
                urllib.error.URLError) as error:  # HTTP errors became DownloadError already
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                kept = (f"the {have:,} bytes received are kept in {part}; run the same command again to "
                        "resume, or get" if have else "get")
                raise DownloadError(f"downloading {file.url} failed after {retries + 1} attempts: "
                                    f"{_why(error)}; {kept} the file by hand and put it in "
                                    f"{part.parent}{os.sep}") from error
            print(f"{file.filename}: connection lost after {have:,} bytes ({_why(error)}); resuming")


class _Incomplete(Exception):
    """The connection ended before Content-Length bytes arrived."""


def _why(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock on ``lock`` (POSIX ``flock``; per open file, so threads wait for each other)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, downloads of one file must not overlap
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stream(file: ReleasedFile, part: Path, progress: bool) -> None:
    """Append the rest of ``file`` to ``part`` (all of it when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "stargan-download", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(file.url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send (or a stale part): start over
            part.unlink()
            return _stream(file, part, progress)
        raise DownloadError(f"{file.url} answered HTTP {error.code} ({error.reason}); the link may have "
                            f"moved: get {file.filename} by hand and put it in {part.parent}{os.sep}") from error
    with response:
        resumed = offset > 0 and response.status == 206 and _range_start(response) == offset
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=file.filename, disable=not progress, leave=True) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise _Incomplete(f"{part.stat().st_size:,} of {total:,} bytes")


def _range_start(response: http.client.HTTPResponse) -> int:
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
