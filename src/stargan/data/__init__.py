"""Datasets: domain folders, transforms, deterministic training batches and the built-in demo data."""
from stargan.data.batches import TrainBatches, fixed_batch, train_loader
from stargan.data.demo import DEMO_DOMAINS, make_demo_dataset
from stargan.data.folders import (IMAGE_EXTENSIONS, DataError, ImageFolder, find_bad_images, load_rgb,
                                  open_dataset, scan_split)
from stargan.data.transforms import eval_images, eval_transform, to_pil, train_transform
from stargan.data.v1 import (LabeledImages, V1Batches, V1Data, celeba_splits, condition_vector,
                             fixed_test_batch, folder_splits, open_v1_data, read_celeba_attributes,
                             target_labels, test_targets, v1_transform)

__all__ = [
    "DEMO_DOMAINS", "IMAGE_EXTENSIONS", "DataError", "ImageFolder", "TrainBatches", "eval_images", "eval_transform",
    "find_bad_images", "fixed_batch", "load_rgb", "make_demo_dataset", "open_dataset", "scan_split",
    "to_pil", "train_loader", "train_transform",
    # StarGAN v1
    "LabeledImages", "V1Batches", "V1Data", "celeba_splits", "condition_vector", "fixed_test_batch",
    "folder_splits", "open_v1_data", "read_celeba_attributes", "target_labels", "test_targets",
    "v1_transform",
]
