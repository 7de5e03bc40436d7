"""Feature statistics of real images, computed once and cached on disk as ``.npz``.

The cache key covers everything the statistics depend on: each file's resolved path, size and
modification time (in order), the image size, and the extractor's name, weights digest and
preprocessing protocol. A custom ``loader`` is not part of the key: use a separate ``cache_dir``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from stargan.data.folders import load_rgb
from stargan.data.transforms import eval_transform
from stargan.metrics.backbones import FeatureExtractor
from stargan.metrics.fid import FeatureStats

KEY_VERSION = 2  # bump when the meaning of cached statistics changes (2: clean-fid scaling for inception-tf)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stargan/stats``, or ``~/.cache/stargan/stats``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stargan" / "stats"


def cache_key(files: Sequence[Path], img_size: int, extractor: FeatureExtractor) -> dict:
    """What the cached statistics depend on, as a JSON-able dict."""
    listing = []
    for path in files:
        stat = Path(path).stat()
        listing.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    files_digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    folder = os.path.commonpath([str(Path(entry[0]).parent) for entry in listing])
    return {"version": KEY_VERSION, "folder": folder, "num_files": len(listing), "files_sha256": files_digest,
            "img_size": img_size, "extractor": extractor.name, "weights_sha256": extractor.weights_sha256,
            "protocol": extractor.protocol}


def _cache_file(key: dict, cache_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir / f"{key['extractor']}-{key['img_size']}px-{digest[:20]}.npz"


def _read(path: Path, key: dict, keep_features: bool) -> FeatureStats | None:
    """The cached statistics, or None when absent, unreadable, for another key or lacking features."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        stored = json.loads(str(arrays.pop("key")))
    except Exception as error:  # a damaged cache file is never fatal: it is recomputed
        warnings.warn(f"ignoring unreadable statistics cache {path} ({error}); recomputing", stacklevel=3)
        return None
    if stored != key or (keep_features and "features" not in arrays):
        return None
    if not keep_features:
        arrays.pop("features", None)
    return FeatureStats.from_state_dict(arrays)


def _write(path: Path, key: dict, stats: FeatureStats) -> None:
    """Write through a temporary file and rename, so readers never see a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(json.dumps(key, sort_keys=True)), **stats.state_dict())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _device_of(extractor: FeatureExtractor) -> torch.device:
    tensor = next(extractor.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def compute_stats(files: Sequence[Path], extractor: FeatureExtractor, loader: Callable[[Path], Tensor],
                  batch_size: int = 64, keep_features: bool = True, progress: bool = True,
                  num_workers: int = 4, desc: str = "features") -> FeatureStats:
    """Run ``extractor`` over ``loader(file)`` for every file, in batches; no caching."""
    stats = FeatureStats(keep_features=keep_features)
    device = _device_of(extractor)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool, \
            tqdm(total=len(files), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            batch = torch.stack(list(pool.map(loader, files[start:start + batch_size])))
            with torch.inference_mode():
                features = extractor(batch.to(device))
            if features.shape != (batch.size(0), extractor.feature_dim):
                raise ValueError(f"{extractor.name} returned features of shape {tuple(features.shape)}, "
                                 f"expected [{batch.size(0)}, {extractor.feature_dim}]")
            stats.update(features)
            bar.update(batch.size(0))
    return stats


def cached_real_stats(files: Sequence[str | Path], img_size: int, extractor: FeatureExtractor,
                      cache_dir: str | Path | None = None, batch_size: int = 64, keep_features: bool = True,
                      progress: bool = True, loader: Callable[[Path], Tensor] | None = None,
                      num_workers: int = 4) -> FeatureStats:
    """Feature statistics of real images, read from ``cache_dir`` when the same key was computed before.

    Images are decoded with ``load_rgb`` and resized by ``eval_transform`` to ``img_size`` (or by
    ``loader(path) -> [3, S, S]`` in [-1, 1]).
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("cached_real_stats got no image files; pass at least one")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image files do not exist, e.g. {missing[0]}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if loader is None:
        def loader(path: Path) -> Tensor:
            return eval_transform(load_rgb(path), img_size)

    key = cache_key(files, img_size, extractor)
    path = _cache_file(key, cache_dir)
    stats = _read(path, key, keep_features)
    if stats is None:
        stats = compute_stats(files, extractor, loader, batch_size=batch_size, keep_features=keep_features,
                              progress=progress, num_workers=num_workers,
                              desc=f"real-image features ({extractor.name}, {img_size}px)")
        _write(path, key, stats)
    return stats
