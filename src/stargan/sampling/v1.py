"""StarGAN v1 test grids: each row an input image followed by its translation to every target.

The targets come from :func:`stargan.data.v1.test_targets`: for attributes (CelebA) each single
attribute changed, and on one dataset also the multi-attribute combinations of the paper's Figure 4;
for domain folders every domain. When training on two datasets, each input is also translated to
every domain of the other, single-label dataset (the paper's Figure 5: RaFD expressions on CelebA
faces), as the released code does.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from stargan.config import V1Config
from stargan.data.v1 import LabeledImages, condition_vector, fixed_test_batch, open_data, test_targets
from stargan.nets.v1 import Generator, Networks
from stargan.imaging import eval_mode, image_grid, save_grid

DATASET_NAMES = {"celeba": ("celeba",), "folders": ("folders",), "both": ("celeba", "rafd")}


def grid_targets(label: torch.Tensor, dataset: int, test: Sequence[LabeledImages]
                 ) -> list[tuple[str, torch.Tensor]]:
    """(column name, G's condition vector [label_dim]) for each target of an input of ``dataset``."""
    sizes = tuple(images.label_dim for images in test)
    columns = []
    for k, images in enumerate(test):
        if k == dataset:
            targets = test_targets(label, images, combos=len(test) == 1)
        elif not images.multi_label:   # every domain of the other dataset (the paper's Figure 5)
            targets = test_targets(torch.tensor(0), images)
        else:   # the other dataset's attributes: the input has no values of its own to change
            continue
        columns += [(name, condition_vector(target[None], k, sizes)[0]) for name, target in targets]
    return columns


@torch.inference_mode()
def translation_grid(generator: Generator, x: torch.Tensor, labels: torch.Tensor, dataset: int,
              test: Sequence[LabeledImages]) -> tuple[torch.Tensor, list[str]]:
    """Grid [3, H, W] in [0, 1] of the inputs ``x`` [N, 3, S, S] (labels of test dataset ``dataset``),
    one row each, and the column names after the input column (of the first row).

    Rows with fewer targets than the widest (an input that already has every hair colour) end in white.
    """
    if x.dim() != 4 or x.size(1) != 3 or x.size(0) != labels.size(0) or x.size(0) == 0:
        raise ValueError(f"x must be [N, 3, S, S] with one label per image, got {tuple(x.shape)} and "
                         f"{labels.size(0)} labels")
    device = next(generator.parameters()).device
    x = x.to(device)
    rows = [grid_targets(labels[i], dataset, test) for i in range(x.size(0))]
    width = max(len(row) for row in rows)
    columns = [x]
    with eval_mode(Networks(generator)):
        for j in range(width):
            present = torch.tensor([j < len(row) for row in rows], device=device)
            c = torch.stack([row[min(j, len(row) - 1)][1] for row in rows]).to(device)
            out = generator(x, c)
            columns.append(torch.where(present[:, None, None, None], out, torch.ones_like(out)))
    cells = torch.stack(columns, dim=1).flatten(0, 1)   # row-major [N * (1 + width), 3, S, S]
    grid = image_grid([cells], nrow=1 + width)
    return grid, [name for name, _ in rows[0]]


def write_test_grids(generator: Generator, config: V1Config,
                     batches: Sequence[tuple[torch.Tensor, torch.Tensor]], test: Sequence[LabeledImages],
                     out_dir: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """One PNG per test dataset, ``out_dir/{prefix}{dataset name}.png``, from fixed (x, labels) batches."""
    names = DATASET_NAMES.get(config.data.mode, tuple(f"dataset{k}" for k in range(len(test))))
    return [save_grid(translation_grid(generator, x, labels, k, test)[0],
                      Path(out_dir) / f"{prefix}{names[k]}.png")
            for k, (x, labels) in enumerate(batches)]


def fixed_test_batches(config: V1Config, test: Sequence[LabeledImages], num: int, seed: int
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num`` test images (and their labels) of each dataset, a seeded choice."""
    return [fixed_test_batch(images, config.model.img_size, crop, num, seed=seed)
            for images, crop in zip(test, config.data.crop_sizes)]


def sample_run(generator: Generator, config: V1Config, out_dir: str | os.PathLike[str],
               num_images: int = 8, seed: int = 0) -> list[Path]:
    """Test grids of a trained generator on its config's datasets (``stargan sample`` of a v1 run)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    data = open_data(config.data, config.model)
    batches = fixed_test_batches(config, data.test, num_images, seed)
    return write_test_grids(generator, config, batches, data.test, out_dir)
