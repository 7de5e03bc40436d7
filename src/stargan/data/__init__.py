"""Datasets: domain folders, transforms, deterministic training batches and the built-in demo data.

StarGAN v1's data (CelebA attributes, label vectors, its batches) is :mod:`stargan.data.v1`."""
from stargan.data.batches import TrainBatches, fixed_batch, train_loader
from stargan.data.demo import DEMO_DOMAINS, make_demo_dataset
from stargan.data.folders import (IMAGE_EXTENSIONS, DataError, ImageFolder, find_bad_images, load_rgb,
                                  open_dataset, scan_split)
from stargan.data.transforms import eval_images, eval_transform, to_pil, train_transform

__all__ = [
    "DEMO_DOMAINS", "IMAGE_EXTENSIONS", "DataError", "ImageFolder", "TrainBatches", "eval_images", "eval_transform",
    "find_bad_images", "fixed_batch", "load_rgb", "make_demo_dataset", "open_dataset", "scan_split",
    "to_pil", "train_loader", "train_transform",
]
