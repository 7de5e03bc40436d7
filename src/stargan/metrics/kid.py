"""Kernel Inception Distance (Binkowski et al., 2018): unbiased MMD^2 with a cubic polynomial kernel.

k(x, y) = (x . y / d + 1)^3, averaged over random subsets as in torch-fidelity and the paper's code.
"""
from __future__ import annotations

import numpy as np
import torch


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[n, d] x [m, d] -> [n, m]``: (x . y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples ``[m, d]``: k(x, x') and k(y, y') exclude i = j."""
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def _as_array(features: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] array of features, got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"{name} has {features.shape[0]} feature vectors; KID needs at least 2 per set")
    return features


def kernel_inception_distance(feats1: torch.Tensor | np.ndarray, feats2: torch.Tensor | np.ndarray,
                              num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID ``(mean, std)`` over ``num_subsets`` pairs of subsets drawn without replacement.

    ``subset_size`` is clamped to the size of the smaller set; subsets come from
    ``np.random.default_rng(seed)``, so the result is a pure function of the inputs.
    """
    x, y = _as_array(feats1, "feats1"), _as_array(feats2, "feats2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: feats1 has {x.shape[1]}, feats2 has {y.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    m = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        values[i] = mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)],
                                  y[rng.choice(y.shape[0], m, replace=False)])
    return float(values.mean()), float(values.std())
