"""Checking every image of a dataset once: results remembered per file (path, size, modification time).

A start or a resume decodes only the images that are new or changed since the last check. The results
live in ``ROOT/.stargan-image-check.json`` (hidden, so never taken for a domain or an image), or, when
the dataset folder is read-only, in ``$XDG_CACHE_HOME/stargan/image-check/`` (default ``~/.cache``).
A cache that cannot be read or written is ignored: the images are then simply decoded again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import PIL
from PIL import Image, ImageFile
from tqdm import tqdm

from stargan.data import images
from stargan.data.images import DataError, image_problem

CACHE_NAME = ".stargan-image-check.json"
FORMAT = "stargan-image-check/1"
MAX_LISTED = 20  # bad images named in an error message

Entry = tuple[int, int, "str | None"]  # size, mtime_ns, reason (None: a good image)


def user_cache_file(root: Path) -> Path:
    """The cache file of ``root`` in the user's cache folder (for read-only datasets)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return base / "stargan" / "image-check" / f"{root.name or 'root'}-{digest}.json"


def _checker() -> dict:
    """What the results depend on besides the files: a new Pillow or limit means checking again."""
    return {"format": FORMAT, "pillow": PIL.__version__, "max_pixels": images.MAX_IMAGE_PIXELS}


class CheckCache:
    """Check results of the images under ``root``, keyed by their path relative to ``root``."""

    def __init__(self, root: str | os.PathLike[str], enabled: bool = True):
        self.root = Path(root)
        self._prefix = str(self.root / "_")[:-1]  # "ROOT/": keys by string slicing (Path ops are slow)
        self.enabled = enabled
        self.entries: dict[str, Entry] = {}
        if enabled:
            for path in (self.root / CACHE_NAME, user_cache_file(self.root)):
                if self._read(path):
                    break

    def _read(self, path: Path) -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("checker") != _checker():
                return False
            self.entries = {key: (int(size), int(mtime), reason if reason is None else str(reason))
                            for key, (size, mtime, reason) in data["files"].items()}
            return True
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return False

    def _key(self, path: Path) -> str:
        text = str(path)
        if text.startswith(self._prefix):
            relative = text[len(self._prefix):]
            return relative if os.sep == "/" else relative.replace(os.sep, "/")
        return str(path.resolve())

    def lookup(self, path: Path, stat: os.stat_result) -> tuple[bool, str | None]:
        """``(known, reason)``: whether ``path`` was checked with this size and mtime, and its result."""
        entry = self.entries.get(self._key(path))
        if entry is None or entry[:2] != (stat.st_size, stat.st_mtime_ns):
            return False, None
        return True, entry[2]

    def store(self, path: Path, stat: os.stat_result, reason: str | None) -> None:
        self.entries[self._key(path)] = (stat.st_size, stat.st_mtime_ns, reason)

    def save(self, keep: Sequence[Path]) -> Path | None:
        """Write the entries of ``keep`` (dropping deleted files); the path written, or None if none
        could be (never an error)."""
        if not self.enabled:
            return None
        kept = {key: self.entries[key] for key in map(self._key, keep) if key in self.entries}
        text = json.dumps({"checker": _checker(), "files": kept}, separators=(",", ":"))
        for path in (self.root / CACHE_NAME, user_cache_file(self.root)):
            if _write_atomically(path, text):
                return path
        return None


def _write_atomically(path: Path, text: str) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


def find_bad_images(files: Sequence[Path], root: str | os.PathLike[str], workers: int = 4,
                    cache: bool = True, progress: bool = True) -> list[tuple[Path, str]]:
    """``(path, reason)`` of each of ``files`` that cannot be decoded.

    Files whose (size, mtime) match an earlier check under ``root`` are not decoded again.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other code), so "
                      "truncated images cannot be detected", stacklevel=2)
    results = CheckCache(root, enabled=cache)
    known: dict[Path, str | None] = {}
    todo: list[tuple[Path, os.stat_result]] = []
    hits = 0
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as error:
            known[path] = images.reason(error)
            continue
        hit, problem = results.lookup(path, stat)
        if hit:
            known[path], hits = problem, hits + 1
        else:
            todo.append((path, stat))
    if todo:
        # Decompression-bomb warnings are about images we refuse anyway (Pillow's UserWarnings are
        # silenced by the decoding itself); the filters are process-wide, so they cover the pool's threads.
        with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                tqdm(total=len(todo), desc="checking images", unit="img", disable=not progress or len(todo) < 200) as bar:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for (path, stat), problem in zip(todo, pool.map(image_problem, [p for p, _ in todo])):
                bar.update(1)
                known[path] = problem
                results.store(path, stat, problem)
    if todo or len(results.entries) > hits:  # new results, or entries of files that are gone
        results.save(files)
    return [(path, known[path]) for path in files if known[path] is not None]


def unusable_images(files: Sequence[Path], root: str | os.PathLike[str], skip_bad_images: bool,
                    workers: int = 4, cache: bool = True, progress: bool = True) -> set[Path]:
    """Check ``files``; stop with a list of the bad ones, or with ``skip_bad_images`` warn and return them.
    ``progress``: a progress bar while 200 or more files are decoded."""
    bad = find_bad_images(files, root, workers=workers, cache=cache, progress=progress)
    if not bad:
        return set()
    if not skip_bad_images:
        listed = "\n".join(f"  {path}: {problem}" for path, problem in bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise DataError(f"{len(bad)} unreadable images in {root}:\n{listed}{more}\n"
                        "fix or delete them, or pass --skip-bad-images to skip them")
    warnings.warn(f"skipping {len(bad)} unreadable images in {root} (first: {bad[0][0]}: {bad[0][1]})",
                  stacklevel=2)
    return {path for path, _ in bad}
