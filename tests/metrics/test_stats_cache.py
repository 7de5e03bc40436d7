import os

import numpy as np
import pytest
import torch
from PIL import Image

from stargan.metrics import stats_cache
from stargan.metrics.backbones import FeatureExtractor
from stargan.metrics.stats_cache import cache_key, cached_real_stats, default_cache_dir

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 100, 50)]


class MeanColour(FeatureExtractor):
    """A stand-in extractor: the mean colour of each image; counts its calls."""

    def __init__(self, protocol: str = "mean colour") -> None:
        super().__init__()
        self.name, self.weights_sha256, self.protocol, self.feature_dim = "mean-colour", "none", protocol, 3
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.mean(dim=(2, 3))


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    paths = []
    for i, colour in enumerate(COLOURS):
        paths.append(folder / f"{i}.png")
        Image.new("RGB", (20, 12), colour).save(paths[-1])
    return paths


def run(files, cache_dir, extractor, img_size=8, **kwargs):
    return cached_real_stats(files, img_size, extractor, cache_dir=cache_dir, batch_size=2, progress=False,
                             **kwargs)


def test_second_call_reads_the_cache(files, tmp_path):
    extractor = MeanColour()
    first = run(files, tmp_path / "cache", extractor)
    assert extractor.calls == 3  # 5 images in batches of 2
    expected = np.array(COLOURS) / 127.5 - 1
    np.testing.assert_allclose(first.features, expected, atol=1e-6)
    np.testing.assert_allclose(first.mean, expected.mean(axis=0), atol=1e-6)

    second = run(files, tmp_path / "cache", extractor)
    assert extractor.calls == 3
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.cov, first.cov)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]  # no temporary file left


def test_img_size_and_mtime_change_the_key(files, tmp_path):
    extractor = MeanColour()
    run(files, tmp_path / "cache", extractor, img_size=8)
    run(files, tmp_path / "cache", extractor, img_size=16)
    assert extractor.calls == 6
    stat = files[2].stat()
    os.utime(files[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    run(files, tmp_path / "cache", extractor, img_size=8)
    assert extractor.calls == 9
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


def test_extractor_identity_is_part_of_the_key(files):
    key = cache_key(files, 8, MeanColour())
    assert key != cache_key(files, 8, MeanColour(protocol="another resize"))
    other = MeanColour()
    other.weights_sha256 = "abc"
    assert key != cache_key(files, 8, other)
    assert key["folder"] == str(files[0].parent.resolve())


def test_statistics_cached_before_the_clean_fid_scaling_are_not_reused(files, tmp_path):
    """inception-tf fed x / 127.5 - 1 before key version 2; such a cache file, even under the same
    protocol text, is recomputed rather than read."""
    extractor = MeanColour()
    run(files, tmp_path, extractor)
    (cached,) = tmp_path.glob("*.npz")
    key = cache_key(files, 8, extractor)
    assert key["version"] == 2
    old = stats_cache._cache_file({**key, "version": 1}, tmp_path)
    cached.rename(old)
    run(files, tmp_path, extractor)
    assert extractor.calls == 2 * 3 and len(list(tmp_path.glob("*.npz"))) == 2  # 5 files, batches of 2


def test_cached_features_are_dropped_or_recomputed_as_asked(files, tmp_path):
    extractor = MeanColour()
    run(files, tmp_path / "cache", extractor, keep_features=False)
    with_features = run(files, tmp_path / "cache", extractor, keep_features=True)
    assert extractor.calls == 6 and with_features.features.shape == (5, 3)
    without = run(files, tmp_path / "cache", extractor, keep_features=False)
    assert extractor.calls == 6 and not without.keep_features


def test_a_damaged_cache_file_is_recomputed(files, tmp_path):
    extractor = MeanColour()
    run(files, tmp_path / "cache", extractor)
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable statistics cache"):
        stats = run(files, tmp_path / "cache", extractor)
    assert extractor.calls == 6 and stats.n == 5


def test_custom_loader_is_used(files, tmp_path):
    stats = run(files, tmp_path / "cache", MeanColour(), loader=lambda path: torch.zeros(3, 4, 4))
    np.testing.assert_array_equal(stats.mean, np.zeros(3))


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "stargan" / "stats"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-3:] == (".cache", "stargan", "stats")


def test_bad_file_lists_are_refused(files, tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        run([], tmp_path / "cache", MeanColour())
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run(files + [tmp_path / "missing.png"], tmp_path / "cache", MeanColour())


def test_wrong_feature_shape_is_reported(files, tmp_path):
    extractor = MeanColour()
    extractor.feature_dim = 4
    with pytest.raises(ValueError, match=r"expected \[2, 4\]"):
        run(files, tmp_path / "cache", extractor)
