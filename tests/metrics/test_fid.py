import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from stargan.metrics.fid import FeatureStats, fid_from_stats, frechet_distance


def stats_of(x: np.ndarray, keep_features: bool = False) -> FeatureStats:
    stats = FeatureStats(keep_features=keep_features)
    stats.update(x)
    return stats


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 32)) * 3 + 1
    stats = stats_of(x)
    assert abs(fid_from_stats(stats, stats)) < 1e-6 * np.trace(stats.cov)


@pytest.mark.parametrize("rotate", [False, True])
def test_fid_of_gaussians_matches_the_closed_form(rotate):
    rng = np.random.default_rng(1)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 4, size=d), rng.uniform(0.1, 4, size=d)
    # Commuting covariances: tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) = sum (sqrt(a) - sqrt(b))^2.
    rotation = ortho_group.rvs(d, random_state=2) if rotate else np.eye(d)
    sigma1 = rotation @ np.diag(a) @ rotation.T
    sigma2 = rotation @ np.diag(b) @ rotation.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_rank_deficient_covariances_give_a_finite_value():
    x = np.random.default_rng(3).normal(size=(5, 10))  # fewer samples than dimensions
    stats = stats_of(x)
    assert abs(fid_from_stats(stats, stats)) < 1e-4


def test_streaming_in_chunks_equals_numpy_on_the_whole_array():
    x = np.random.default_rng(4).normal(size=(1000, 12)) * 0.5 + 100  # large mean: cancellation-prone
    stats = FeatureStats(keep_features=True)
    for chunk in np.split(x, [1, 8, 300, 301]):
        stats.update(torch.from_numpy(chunk) if len(chunk) == 7 else chunk)
    assert stats.n == 1000
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(stats.features, x.astype(np.float32))


def test_merge_equals_one_pass():
    x = np.random.default_rng(5).normal(size=(300, 6))
    left, right = stats_of(x[:120], keep_features=True), stats_of(x[120:], keep_features=True)
    left.merge(right)
    whole = stats_of(x)
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(left.cov, whole.cov, rtol=1e-10)
    np.testing.assert_array_equal(left.features, x.astype(np.float32))


def test_state_dict_round_trip():
    x = np.random.default_rng(6).normal(size=(50, 4))
    stats = stats_of(x, keep_features=True)
    restored = FeatureStats.from_state_dict({k: np.array(v) for k, v in stats.state_dict().items()})
    assert restored.n == 50 and restored.keep_features
    np.testing.assert_array_equal(restored.mean, stats.mean)
    np.testing.assert_array_equal(restored.cov, stats.cov)
    np.testing.assert_array_equal(restored.features, stats.features)
    assert "features" not in stats_of(x).state_dict()


def test_errors_are_specific():
    stats = stats_of(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.cov
    with pytest.raises(ValueError, match="dimension 4"):
        stats.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="keep_features=True"):
        stats.features
    with pytest.raises(ValueError, match="no features yet"):
        FeatureStats().mean
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        FeatureStats().update(np.ones(3))


@pytest.mark.parametrize("dim, n", [(8, 50), (64, 300)])
def test_eigh_trace_equals_sqrtm(dim, n):
    """The fast eigendecomposition path gives pytorch-fid's sqrtm value on real-looking covariances."""
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fast = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    reference = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert fast == pytest.approx(reference, rel=1e-8)
    assert fast > 0


def test_eigh_handles_singular_covariances():
    """Fewer samples than dimensions: the self-distance is still ~0 and the value finite."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 20))
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6 * np.trace(s)
