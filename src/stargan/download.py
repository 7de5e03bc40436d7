"""``stargan download``: the released models and the metric weights, fetched once and put in place.

Every file is streamed to ``NAME.part`` beside its destination with a progress bar, resumed with an
HTTP Range request after a dropped connection (or a later run), verified (SHA-256 where it is known,
otherwise a structural check, and the digest printed so it can be pinned), then renamed into place in
one step: torch hub's checkpoint folder (where :mod:`stargan.metrics.weights` looks) unless a folder
is given. A lock file makes concurrent downloads of one file wait for each other. ``STARGAN_OFFLINE=1``
(``--offline`` on the command line) turns every fetch into an error that says what to fetch by hand.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from stargan.data import generated
from stargan.data.folders import IMAGE_EXTENSIONS
from stargan.metrics import weights

CHUNK = 1 << 20       # bytes read from the connection at a time
RETRIES = 3           # resumed attempts after a dropped connection, within one call
TIMEOUT_S = 60        # seconds without a byte before the connection counts as dropped
OFFLINE_ENV = "STARGAN_OFFLINE"
LICENCE_PREFIX = "# licence:"   # the config.yaml comment of an imported release (read by `stargan serve`)
# The first bytes of a legacy (non-zip) torch.save file: pickle protocol 2, then torch's magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class DownloadError(weights.WeightsError):
    """A file could not be fetched or verified; the message says what to do instead."""


@dataclass(frozen=True)
class RemoteFile:
    filename: str          # its name in the weights folder
    url: str
    sha256: str | None     # full digest or a prefix (torch hub's file-name convention); None: unpublished
    kind: str = "torch"    # structural check: "torch" (a torch.save file), "zip", "npz"
    size: str = "?"        # for the list only (approximate; the releases publish no sizes)


@dataclass(frozen=True)
class Release:
    files: tuple[RemoteFile, ...]
    licence: str
    source: str               # one line: what it is, from where
    model: str = ""           # "v2" / "v1": imported into RUNS/<name>-official after the download
    also: tuple[str, ...] = ()  # names fetched along with this one
    dataset: str = ""         # a zip of train/val domain folders, unpacked into DATA/<dataset>


def _dropbox(code: str, name: str) -> str:
    return f"https://www.dropbox.com/s/{code}/{name}?dl=1"  # dl=1: the file, not the preview page


def _metric(key: str, size: str, licence: str) -> Release:
    spec = weights.REGISTRY[key]
    return Release(files=(RemoteFile(spec.filename, spec.url, spec.sha256 or spec.prefix, size=size),),
                   licence=licence, source=spec.source)


_V2 = "CC BY-NC 4.0 (NAVER Corp.): non-commercial use only"
_V2_SOURCE = "StarGAN v2 release (clovaai/stargan-v2)"
_V1 = "MIT (StarGAN v1 release, yunjey/stargan); trained on CelebA, whose terms are non-commercial research"
CATALOG: dict[str, Release] = {
    "celeba_hq": Release(
        files=(RemoteFile("stargan-v2-celeba_hq-100000_nets_ema.ckpt",
                          _dropbox("96fmei6c93o8b8t", "100000_nets_ema.ckpt"), None),),
        licence=_V2, source=f"{_V2_SOURCE}: CelebA-HQ model, 256 px, female/male, w_hpf 1",
        model="v2", also=("wing",)),
    "afhq": Release(
        files=(RemoteFile("stargan-v2-afhq-100000_nets_ema.ckpt",
                          _dropbox("etwm810v25h42sn", "100000_nets_ema.ckpt"), None),),
        licence=_V2, source=f"{_V2_SOURCE}: AFHQ model, 256 px, cat/dog/wild", model="v2"),
    "wing": Release(
        files=(RemoteFile("wing.ckpt", _dropbox("tjxpypwpt38926e", "wing.ckpt"), None),
               RemoteFile("celeba_lm_mean.npz", _dropbox("91fth49gyb7xksk", "celeba_lm_mean.npz"), None,
                          kind="npz")),
        licence=_V2, source=f"{_V2_SOURCE}: FAN face landmark network and mean CelebA-HQ landmarks (masks)"),
    "celeba128": Release(
        files=(RemoteFile("stargan-v1-celeba-128x128-5attrs.zip",
                          _dropbox("7e966qq0nlxwte4", "celeba-128x128-5attrs.zip"), None, kind="zip"),),
        licence=_V1, source="StarGAN v1 release: CelebA model, 128 px, 5 attributes", model="v1"),
    "celeba256": Release(
        files=(RemoteFile("stargan-v1-celeba-256x256-5attrs.zip",
                          _dropbox("zdq6roqf63m0v5f", "celeba-256x256-5attrs.zip"), None, kind="zip"),),
        licence=_V1, source="StarGAN v1 release: CelebA model, 256 px, 5 attributes", model="v1"),
    "afhq-data": Release(
        files=(RemoteFile("stargan-v2-afhq-data.zip", _dropbox("t9l9o3vsx2jai3z", "afhq.zip"), None, kind="zip"),),
        licence=_V2, source=f"{_V2_SOURCE}: AFHQ dataset, train/val x cat/dog/wild, 512 px", dataset="afhq"),
    "celeba_hq-data": Release(
        files=(RemoteFile("stargan-v2-celeba_hq-data.zip", _dropbox("f7pvjij2xlpff59", "celeba_hq.zip"), None,
                          kind="zip"),),
        licence="CelebA-HQ follows CelebA's terms: non-commercial research only",
        source=f"{_V2_SOURCE}: CelebA-HQ dataset, train/val x female/male", dataset="celeba_hq"),
    "inception-tf": _metric("inception-tf", "~91 MiB", "Apache-2.0 (pytorch-fid's port of the TF Inception graph)"),
    "inception-torchvision": _metric("inception-torchvision", "~104 MiB", "BSD-3-Clause (torchvision)"),
    "alexnet": _metric("alexnet", "~233 MiB", "BSD-3-Clause (torchvision)"),
}


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def release(name: str) -> Release:
    if name not in CATALOG:
        raise ValueError(f"unknown download {name!r}; known: {', '.join(CATALOG)} (see `stargan download --list`)")
    return CATALOG[name]


def catalog_lines() -> list[str]:
    """Per file: name, file, size, SHA-256, licence; then its source and URL (``stargan download --list``)."""
    lines = [f"{'NAME':22s} {'FILE':42s} {'SIZE':9s} {'SHA-256':13s} LICENCE"]
    for name, entry in CATALOG.items():
        for remote in entry.files:
            pinned = remote.sha256[:12] if remote.sha256 else "unpublished"
            lines.append(f"{name:22s} {remote.filename:42s} {remote.size:9s} {pinned:13s} {entry.licence}")
            lines.append(f"{'':22s} {entry.source}: {remote.url}")
    return lines


# ------------------------------------------------------------------------------------------------
# One file: stream, resume, verify, rename.

def fetch(remote: RemoteFile, folder: str | Path | None = None, *, name: str = "", progress: bool = True,
          retries: int = RETRIES) -> Path:
    """``folder/remote.filename``, downloaded unless a verified copy is there already."""
    folder = Path(folder) if folder is not None else weights.hub_dir()
    final = folder / remote.filename
    if is_offline():
        if final.is_file():
            _verify(final, remote)
            return final
        raise DownloadError(f"{final.name} is needed but {OFFLINE_ENV} is set (or --offline was given), so "
                            f"nothing is downloaded. Fetch it on a connected machine with "
                            f"`stargan download {name or remote.filename}` (or from {remote.url}) and put it "
                            f"in {folder}{os.sep}")
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f"{remote.filename}.lock"):
        if final.is_file():
            try:
                _verify(final, remote)
                return final  # there already, or finished by a concurrent download we waited for
            except DownloadError as error:
                print(f"{final} exists but {error}; downloading it again")
                final.unlink()
        part = folder / f"{remote.filename}.part"
        for attempt in range(retries + 1):
            try:
                _stream(remote, part, progress)
                break
            except (http.client.HTTPException, ConnectionError, TimeoutError, _Incomplete,
                    urllib.error.URLError) as error:  # HTTP errors became DownloadError already
                have = part.stat().st_size if part.exists() else 0
                if attempt == retries:
                    kept = (f"the {have:,} bytes received are kept in {part}; run the same command again to "
                            "resume, or get" if have else "get")
                    raise DownloadError(f"downloading {remote.url} failed after {retries + 1} attempts: "
                                        f"{_why(error)}; {kept} the file by hand and put it in "
                                        f"{folder}{os.sep}") from error
                print(f"{remote.filename}: connection lost after {have:,} bytes ({_why(error)}); resuming")
        try:
            digest = _verify(part, remote)
        except DownloadError as error:
            part.unlink()
            raise DownloadError(f"{error}; the download was deleted") from None
        if not remote.sha256:
            print(f"{remote.filename}: sha256 {digest} (the release publishes no hash; keep it to compare)")
        os.replace(part, final)  # atomic: readers see no file or the whole, verified file
    return final


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


def _stream(remote: RemoteFile, part: Path, progress: bool) -> None:
    """Append the rest of ``remote`` to ``part`` (all of it when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "stargan-download", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send (or a stale part): start over
            part.unlink()
            return _stream(remote, part, progress)
        raise DownloadError(f"{remote.url} answered HTTP {error.code} ({error.reason}); the link may have "
                            f"moved: get {remote.filename} by hand and put it in {part.parent}{os.sep}") from error
    with response:
        resumed = offset > 0 and response.status == 206 and _range_start(response) == offset
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=remote.filename, disable=not progress, leave=True) as bar:
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


def _verify(path: Path, remote: RemoteFile) -> str:
    """The file's SHA-256, after checking it against the known digest, or else its structure."""
    digest = weights.sha256_file(path)
    if remote.sha256:
        if not digest.startswith(remote.sha256):
            raise DownloadError(f"{remote.filename}: wrong SHA-256 {digest} (expected {remote.sha256}): a "
                                f"different or damaged file (source {remote.url})")
        return digest
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    fits = zipfile.is_zipfile(path) or (remote.kind == "torch" and head == _LEGACY_TORCH_MAGIC)
    if not fits:
        what = {"torch": "a torch checkpoint", "zip": "a zip archive", "npz": "a numpy .npz file"}[remote.kind]
        looks = " (it looks like a web page)" if head.lstrip().lower().startswith(b"<") else ""
        raise DownloadError(f"{remote.filename} is not {what}{looks}; check {remote.url} in a browser")
    return digest


# ------------------------------------------------------------------------------------------------
# Names: files, then the import of a model into a run directory.

def files_of(name: str, folder: str | Path | None = None, *, progress: bool = True) -> list[Path]:
    """The files of catalog entry ``name`` (and of the entries it brings along), fetched when missing."""
    entry = release(name)
    paths = [fetch(remote, folder, name=name, progress=progress) for remote in entry.files]
    for other in entry.also:
        paths += files_of(other, folder, progress=progress)
    return paths


def download(name: str, folder: str | Path | None = None, runs: str | Path = "runs", *,
             data: str | Path = "data", progress: bool = True) -> list[Path]:
    """Fetch ``name``; a model is also imported into ``RUNS/<name>-official``, a dataset unpacked into
    ``DATA/<dataset>``. Returns the files, then the run or dataset folder made."""
    entry = release(name)
    if entry.model or entry.dataset:
        print(f"{name}: licence {entry.licence}")
    paths = files_of(name, folder, progress=progress)
    if entry.dataset:
        return [*paths, unpack_dataset(paths[0], Path(data) / entry.dataset)]
    if not entry.model:
        return paths
    run = Path(runs) / f"{name}-official"
    if (run / "config.yaml").is_file():
        print(f"{run} exists already; not imported again")
    elif entry.model == "v2":
        from stargan.official import import_official
        import_official(paths[0], run)
        _record_licence(run, entry)
    else:
        from stargan.official import import_official_v1
        g, d = _unzip_v1(paths[0], Path(str(paths[0]).removesuffix(".zip")))
        import_official_v1(g, d, out_dir=run)
        _record_licence(run, entry)
    return [*paths, run]


def _record_licence(run: Path, entry: Release) -> None:
    config = run / "config.yaml"
    config.write_text(f"{LICENCE_PREFIX} {entry.licence}\n# source: {entry.source}\n{config.read_text()}")


def _unzip_v1(archive: Path, out: Path) -> tuple[Path, Path]:
    """The ``NNNNNN-G.ckpt`` and ``NNNNNN-D.ckpt`` members of a v1 release zip, written into ``out``.

    Only those two members are read, each written under its own base name: no path in the archive
    decides where anything is written.
    """
    with zipfile.ZipFile(archive) as zf:
        members = {Path(info.filename).name: info for info in zf.infolist() if not info.is_dir()}
        found = {}
        for role in ("G", "D"):
            names = sorted(n for n in members if n.endswith(f"-{role}.ckpt"))
            if not names:
                raise DownloadError(f"{archive} holds no NNNNNN-{role}.ckpt (members: {sorted(members)})")
            found[role] = out / names[-1]
            if not found[role].is_file():
                out.mkdir(parents=True, exist_ok=True)
                tmp = found[role].with_suffix(".tmp")
                with zf.open(members[names[-1]]) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                os.replace(tmp, found[role])
    return found["G"], found["D"]


_UNPACKING = ".unpacking"


def unpack_dataset(archive: Path, out: Path) -> Path:
    """Unpack the ``.../{train,val}/<domain>/<image>`` members of ``archive`` into ``out``.

    Only members of that shape with an image extension are written, under ``out/split/domain/name``
    built from those three checked names: no path in the archive decides where anything goes. A
    folder unpacked from the same archive is reused; an interrupted one is unpacked again.
    """
    settings = {"archive": archive.name, "sha256": weights.sha256_file(archive)}
    if generated.holds(out, settings):
        print(f"{out} holds {archive.name} already")
        return out
    generated.refuse_foreign(out, ("train", "val"), _UNPACKING,
                             f"{out} has train/ or val/ folders that stargan did not unpack; pass another "
                             "--data folder (or move them)")
    count = 0
    with generated.writing(out, settings, _UNPACKING), zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or len(parts) < 3:
                continue
            split, domain, filename = parts[-3:]
            if (split not in ("train", "val") or Path(filename).suffix.lower() not in IMAGE_EXTENSIONS
                    or any(p.startswith(".") for p in (domain, filename))):
                continue
            target = out / split / domain / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            count += 1
        if count == 0:
            raise DownloadError(f"{archive} holds no train/<domain>/ or val/<domain>/ images")
    print(f"unpacked {count:,} images into {out}/train and {out}/val")
    return out
