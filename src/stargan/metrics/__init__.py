"""Evaluation metrics: FID, KID and LPIPS, their feature extractors and pretrained weights.

Weight files are found by :func:`resolve_weights` (an explicit path, or torch.hub's checkpoint folder,
where a missing file is fetched on first use by :func:`stargan.hub.fetch` unless offline) and verified
by SHA-256.
"""
from stargan.metrics.backbones import (EXTRACTORS, FeatureExtractor, build_extractor, clean_resize, describe,
                                       tf_inception_input, to_pixels)
from stargan.metrics.fid import FeatureStats, fid_from_stats, frechet_distance
from stargan.metrics.kid import kernel_inception_distance
from stargan.metrics.lpips import LPIPS
from stargan.metrics.stats_cache import cached_real_stats, compute_stats, default_cache_dir
from stargan.metrics.weights import RANDOM_INIT, REGISTRY, Weights, WeightsError, resolve_weights

__all__ = [
    "EXTRACTORS", "LPIPS", "RANDOM_INIT", "REGISTRY", "FeatureExtractor", "FeatureStats", "Weights",
    "WeightsError", "build_extractor", "cached_real_stats", "clean_resize", "compute_stats",
    "default_cache_dir", "describe", "fid_from_stats", "frechet_distance", "kernel_inception_distance",
    "resolve_weights", "tf_inception_input", "to_pixels",
]
