import itertools

import numpy as np
import pytest

from stargan.metrics.kid import kernel_inception_distance


def k(x, y):
    return (np.dot(x, y) / len(x) + 1) ** 3


def mmd2_by_hand(xs, ys):
    m = len(xs)
    within = sum(k(xs[i], xs[j]) + k(ys[i], ys[j]) for i, j in itertools.permutations(range(m), 2))
    across = sum(k(x, y) for x in xs for y in ys)
    return within / (m * (m - 1)) - 2 * across / m**2


def test_tiny_case_equals_the_formula_by_hand():
    xs = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    ys = np.array([[0.5, 0.5], [2.0, -1.0], [1.0, 1.0]])
    mean, std = kernel_inception_distance(xs, ys, num_subsets=3, subset_size=3)
    assert mean == pytest.approx(mmd2_by_hand(xs, ys), rel=1e-12)
    assert std == pytest.approx(0, abs=1e-12)  # every subset is the whole set, only permuted


def test_unbiased_for_samples_of_one_distribution():
    rng = np.random.default_rng(0)
    trials, m, d = 300, 10, 4
    unbiased, biased = [], []
    for t in range(trials):
        xs, ys = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        unbiased.append(kernel_inception_distance(xs, ys, num_subsets=1, seed=t)[0])
        kxx, kyy, kxy = [(a @ b.T / d + 1) ** 3 for a, b in ((xs, xs), (ys, ys), (xs, ys))]
        biased.append((kxx.sum() + kyy.sum() - 2 * kxy.sum()) / m**2)
    unbiased, biased = np.array(unbiased), np.array(biased)
    assert abs(unbiased.mean()) < 4 * unbiased.std() / np.sqrt(trials)
    # The same check on the biased (V-statistic) estimator fails: the test has power.
    assert biased.mean() > 4 * biased.std() / np.sqrt(trials)


def test_a_shift_in_mean_is_positive():
    rng = np.random.default_rng(1)
    xs, ys = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1
    mean, std = kernel_inception_distance(xs, ys, num_subsets=20, subset_size=50)
    assert mean > 5 * std > 0


def test_subset_size_is_clamped_and_seeded():
    rng = np.random.default_rng(2)
    xs, ys = rng.normal(size=(30, 3)), rng.normal(size=(12, 3))
    first = kernel_inception_distance(xs, ys, num_subsets=5, seed=7)
    assert first == kernel_inception_distance(xs, ys, num_subsets=5, seed=7)
    assert first != kernel_inception_distance(xs, ys, num_subsets=5, seed=8)


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.ones((1, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        kernel_inception_distance(np.ones((4, 3)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        kernel_inception_distance(np.ones(4), np.ones((5, 2)))
