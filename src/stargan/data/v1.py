"""StarGAN v1 data: CelebA attributes, domain folders (RaFD-style) or both, G's condition vectors,
and the training batch of each step as a pure function of ``(seed, step, rank)``.

Training on both datasets (the paper's Section 3.2) conditions G on ``[c_celeba, c_rafd, mask]``:
the labels of the current dataset, zeros for the other's, and a one-hot mask saying which is known.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from stargan.config import V1DataConfig, V1ModelConfig
from stargan.data.attributes import (LabeledImages, celeba_splits, exclusive_groups, read_celeba_attributes,
                                     test_targets)
from stargan.data.batches import NUM_STEPS, step_generator
from stargan.data.folders import DataError, ImageFolder, load_rgb, open_dataset
from stargan.data.image_check import unusable_images
from stargan.data.transforms import to_rgb, to_tensor

MODES = ("celeba", "folders", "both")
ATTR_FILE_NAME = "list_attr_celeba.txt"

__all__ = [
    "LabeledImages", "Batches", "Data", "celeba_splits", "condition_vector", "exclusive_groups",
    "fixed_test_batch", "folder_splits", "open_data", "read_celeba_attributes", "target_labels",
    "test_targets", "transform",
]


def _from_folder(folder: ImageFolder) -> LabeledImages:
    labels = torch.tensor(folder.labels, dtype=torch.long)
    return LabeledImages(root=folder.root, files=folder.files, labels=labels, names=folder.domains,
                         multi_label=False)


def folder_splits(root: str | Path, skip_bad_images: bool = False, check_images: bool = True,
                  progress: bool = True) -> tuple[LabeledImages, LabeledImages]:
    """``(train, test)`` from ``root/train/<domain>/`` and ``root/val/<domain>/``, checked as
    :func:`stargan.data.open_dataset` does."""
    train, val = open_dataset(root, skip_bad_images=skip_bad_images, check_images=check_images,
                              progress=progress)
    return _from_folder(train), _from_folder(val)


@dataclass(frozen=True)
class Data:
    """The splits of each training dataset: one, or (CelebA, folders) when training on both."""

    train: tuple[LabeledImages, ...]
    test: tuple[LabeledImages, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Label length of each dataset (attributes or domains)."""
        return tuple(images.label_dim for images in self.train)

    @property
    def label_dim(self) -> int:
        return _label_dim(self.sizes)


def _label_dim(sizes: Sequence[int]) -> int:
    return sizes[0] if len(sizes) == 1 else sum(sizes) + len(sizes)


def default_attr_file(root: str | Path) -> Path:
    """``root/../list_attr_celeba.txt`` (the released layout), else ``root/list_attr_celeba.txt``."""
    root = Path(root)
    candidates = (root.parent / ATTR_FILE_NAME, root / ATTR_FILE_NAME)
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise DataError(f"no attribute file: neither {candidates[0]} nor {candidates[1]} exists; "
                        f"--set data.attr_file=PATH/{ATTR_FILE_NAME}")
    return found


def _check_size(what: str, names: Sequence[str], key: str, expected: int) -> None:
    if len(names) != expected:
        raise ValueError(f"{what} {len(names)} {list(names)} but model.{key} is {expected}; "
                         f"--set model.{key}={len(names)}")


def _require(value: str, setting: str, what: str) -> None:
    if not value:
        raise ValueError(f"{setting} is empty; --set {setting}=PATH to {what}")


def _open_celeba(cfg: V1DataConfig, model: V1ModelConfig, check_images: bool,
                 progress: bool = True) -> tuple[LabeledImages, LabeledImages]:
    if not Path(cfg.root).is_dir():
        raise DataError(f"CelebA image folder {cfg.root} (data.root) does not exist; --set data.root=PATH "
                        "to the folder holding 000001.jpg ... (img_align_celeba)")
    _check_size("data.attrs selects", cfg.attrs, "c_dim", model.c_dim)
    attr_file = Path(cfg.attr_file) if cfg.attr_file else default_attr_file(cfg.root)
    train, test = celeba_splits(cfg.root, attr_file, cfg.attrs, cfg.exclusive, cfg.test_size)
    if not check_images:
        return train, test
    drop = unusable_images(train.files + test.files, cfg.root, cfg.skip_bad_images, progress=progress)
    train, test = train.without(drop), test.without(drop)
    if not len(train):
        raise DataError(f"every training image listed in {attr_file} is unreadable; replace the images in "
                        f"{cfg.root}")
    return train, test


def _open_folders(cfg: V1DataConfig, root: str, key: str, expected: int, check_images: bool,
                  progress: bool = True) -> tuple[LabeledImages, LabeledImages]:
    train, test = folder_splits(root, skip_bad_images=cfg.skip_bad_images, check_images=check_images,
                                progress=progress)
    _check_size(f"{Path(root) / 'train'} has domains", train.names, key, expected)
    if cfg.domains and tuple(cfg.domains) != train.names:
        raise DataError(f"{root} has domains {list(train.names)} but the config (data.domains) expects "
                        f"{list(cfg.domains)}; restore the folders or start a new run")
    return train, test


def open_data(cfg: V1DataConfig, model: V1ModelConfig, check_images: bool = True,
              progress: bool = True) -> Data:
    """Open the datasets of ``cfg.mode`` and check them against the model's label sizes.

    With ``check_images`` every image is decoded once (results cached per file, see
    :mod:`stargan.data.image_check`): bad ones stop here, or are skipped with ``cfg.skip_bad_images``.
    """
    if cfg.mode not in MODES:
        raise ValueError(f"data.mode is {cfg.mode!r}; expected one of {', '.join(MODES)}")
    if cfg.mode == "both" and model.c2_dim < 1:
        raise ValueError("data.mode is 'both' but model.c2_dim is 0; --set model.c2_dim=N (the number of "
                         "domains of data.rafd_root)")
    if cfg.mode != "both" and model.c2_dim:
        raise ValueError(f"model.c2_dim is {model.c2_dim} but data.mode is {cfg.mode!r}; c2_dim is only for "
                         "data.mode=both: --set model.c2_dim=0")
    folders = "a folder holding train/<domain>/ and val/<domain>/"
    celeba = "CelebA's image folder (img_align_celeba)"
    _require(cfg.root, "data.root", folders if cfg.mode == "folders" else celeba)
    if cfg.mode == "both":
        _require(cfg.rafd_root, "data.rafd_root", folders)
    if cfg.mode == "celeba":
        splits = [_open_celeba(cfg, model, check_images, progress)]
    elif cfg.mode == "folders":
        splits = [_open_folders(cfg, cfg.root, "c_dim", model.c_dim, check_images, progress)]
    else:
        splits = [_open_celeba(cfg, model, check_images, progress),
                  _open_folders(cfg, cfg.rafd_root, "c2_dim", model.c2_dim, check_images, progress)]
    return Data(train=tuple(train for train, _ in splits), test=tuple(test for _, test in splits))


def condition_vector(labels: Tensor, dataset: int, data: Data | Sequence[int]) -> Tensor:
    """G's float ``[B, label_dim]`` input for ``labels`` of training dataset ``dataset``.

    Multi-label ``[B, c]`` labels stay multi-hot, class indices ``[B]`` become one-hot. With several
    datasets: ``[c_0, c_1, ..., mask]``, zeros for the other datasets and ``mask`` one-hot of ``dataset``.
    """
    sizes = data.sizes if isinstance(data, Data) else tuple(data)
    if not 0 <= dataset < len(sizes):
        raise ValueError(f"dataset {dataset} out of range for {len(sizes)} datasets")
    size = sizes[dataset]
    if labels.ndim == 2 and labels.shape[1] == size:
        own = labels.float()
    elif labels.ndim == 1 and not labels.is_floating_point():
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < size:
            raise ValueError(f"class indices {labels.tolist()} out of range for {size} domains")
        own = nnf.one_hot(labels, size).float()
    else:
        raise ValueError(f"labels of dataset {dataset} must be [B, {size}] 0/1 or [B] class indices, got "
                         f"{labels.dtype} {list(labels.shape)}")
    if len(sizes) == 1:
        return own
    batch = labels.shape[0]
    parts = [own if k == dataset else own.new_zeros(batch, n) for k, n in enumerate(sizes)]
    mask = own.new_zeros(batch, len(sizes))
    mask[:, dataset] = 1
    return torch.cat(parts + [mask], dim=1)


def target_labels(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A random permutation of the batch's labels (the released code's target domains)."""
    order = torch.randperm(labels.shape[0], generator=generator).to(labels.device)
    return labels[order]


def transform(img: Image.Image, img_size: int, crop_size: int, flip: bool,
              generator: torch.Generator | None = None) -> Tensor:
    """Center crop (when ``0 < crop_size <=`` both sides), resize, and with ``flip`` a horizontal flip
    with probability 0.5 drawn from ``generator``. Float32 ``[3, img_size, img_size]`` in [-1, 1]."""
    img = to_rgb(img)
    if 0 < crop_size <= min(img.width, img.height):
        img = F.center_crop(img, [crop_size, crop_size])
    img = F.resize(img, [img_size, img_size], antialias=True)
    if flip:
        if generator is None:
            raise ValueError("transform with flip=True needs a generator, so batches stay reproducible")
        if torch.rand((), dtype=torch.float64, generator=generator).item() < 0.5:
            img = F.horizontal_flip(img)
    return to_tensor(img)


class Batches(Dataset):
    """``batches[step]`` is the whole batch of iteration ``step``, a pure function of ``(seed, step, rank)``.

    Step ``step`` uses training dataset ``step % len(data.train)`` (with two: CelebA on even steps, the
    folders on odd ones). Images are drawn uniformly with replacement; the target labels are a
    permutation of the batch's labels. ``crop_size`` is one value, or one per training dataset.
    """

    def __init__(self, data: Data, img_size: int, batch_size: int, seed: int,
                 crop_size: int | Sequence[int], flip: bool = True, rank: int = 0):
        if img_size < 1 or batch_size < 1:
            raise ValueError(f"img_size and batch_size must be >= 1, got {img_size} and {batch_size}")
        crops = (crop_size,) * len(data.train) if isinstance(crop_size, int) else tuple(crop_size)
        if len(crops) != len(data.train) or any(c < 0 for c in crops):
            raise ValueError(f"crop_size must be >= 0, one value or one per dataset ({len(data.train)}); "
                             f"got {crop_size}")
        empty = [str(images.root) for images in data.train if not len(images)]
        if empty:
            raise DataError(f"training datasets {empty} have no images")
        self.data = data
        self.img_size = img_size
        self.batch_size = batch_size
        self.seed = seed
        self.crops = crops
        self.flip = flip
        self.rank = rank  # each data-parallel process draws its own batches

    def __len__(self) -> int:
        return NUM_STEPS

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        g = step_generator(self.seed, int(step), self.rank)
        dataset = int(step) % len(self.data.train)
        images = self.data.train[dataset]
        picked = torch.randint(len(images), (self.batch_size,), generator=g)
        x_real = torch.stack([transform(load_rgb(images.files[i]), self.img_size, self.crops[dataset],
                                        self.flip, g) for i in picked.tolist()])
        label_org = images.labels[picked]
        label_trg = target_labels(label_org, g)
        return {
            "x_real": x_real,
            "label_org": label_org,
            "label_trg": label_trg,
            "c_org": condition_vector(label_org, dataset, self.data),
            "c_trg": condition_vector(label_trg, dataset, self.data),
            "dataset": torch.tensor(dataset, dtype=torch.long),
            "alpha": torch.rand(self.batch_size, 1, 1, 1, generator=g),  # gradient-penalty interpolation
        }


def fixed_test_batch(images: LabeledImages, img_size: int, crop_size: int, num: int,
                     seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """``num`` test images (fewer if the split is smaller), not flipped, and their labels.

    The images are a seeded random choice, or the first ``num`` when ``seed`` is None.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if not len(images):
        raise DataError(f"the test split of {images.root} has no images")
    count = min(num, len(images))
    if seed is None:
        picked = torch.arange(count)
    else:
        picked = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    x = torch.stack([transform(load_rgb(images.files[i]), img_size, crop_size, flip=False)
                     for i in picked.tolist()])
    return x, images.labels[picked]
