"""``stargan download``: the released models and the metric weights, fetched once and put in place.

The files are the records of :data:`stargan.hub.RELEASES`, fetched by :func:`stargan.hub.fetch` (progress
bar, resume, hash or format check, lock, the offline switch) into torch hub's checkpoint folder (where
:mod:`stargan.metrics.weights` and :mod:`stargan.faces.weights` look) unless a folder is given. A model is
then imported into ``RUNS/<name>-official`` with its licence noted at the top of its ``config.yaml``; a
dataset is unpacked into ``DATA/<dataset>``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from stargan.data import generated
from stargan.data.folders import IMAGE_EXTENSIONS
from stargan.hub import CHUNK, LICENCE_PREFIX, RELEASES, DownloadError, Release, fetch, sha256_file
from stargan.official import import_official, import_v1_official


def release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"unknown download {name!r}; known: {', '.join(RELEASES)} (see `stargan download --list`)")
    return RELEASES[name]


def catalog_lines() -> list[str]:
    """Per file: name, file, size, SHA-256, licence; then its source and URL (``stargan download --list``)."""
    lines = [f"{'NAME':22s} {'FILE':42s} {'SIZE':9s} {'SHA-256':13s} LICENCE"]
    for name, entry in RELEASES.items():
        for file in entry.files:
            pinned = file.pinned[:12] if file.pinned else "unpublished"
            lines.append(f"{name:22s} {file.filename:42s} {file.size:9s} {pinned:13s} {file.licence}")
            lines.append(f"{'':22s} {entry.source}: {file.url}")
    return lines


# ------------------------------------------------------------------------------------------------
# Names: files, then the import of a model into a run directory.

def files_of(name: str, folder: str | Path | None = None, *, progress: bool = True) -> list[Path]:
    """The files of catalog entry ``name`` (and of the entries it brings along), fetched when missing."""
    entry = release(name)
    paths = [fetch(file, folder, name=name, progress=progress) for file in entry.files]
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
        import_official(paths[0], run)
        _record_licence(run, entry)
    else:
        g, d = _unzip_v1_release(paths[0], Path(str(paths[0]).removesuffix(".zip")))
        import_v1_official(g, d, out_dir=run)
        _record_licence(run, entry)
    return [*paths, run]


def _record_licence(run: Path, entry: Release) -> None:
    config = run / "config.yaml"
    config.write_text(f"{LICENCE_PREFIX} {entry.licence}\n# source: {entry.source}\n{config.read_text()}")


def _unzip_v1_release(archive: Path, out: Path) -> tuple[Path, Path]:
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
    settings = {"archive": archive.name, "sha256": sha256_file(archive)}
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
