"""StarGAN v1 test grids: the columns of each row and the grid layout."""
from __future__ import annotations

from pathlib import Path

import torch

from stargan.config import V1ModelConfig
from stargan.data.v1 import LabeledImages
from stargan.nets.v1 import build_networks
from stargan.imaging import GRID_PADDING
from stargan.sampling.v1 import grid_targets, translation_grid

ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")


def celeba(labels: list[list[float]]) -> LabeledImages:
    return LabeledImages(root=Path("celeba"), files=tuple(Path(f"{i}.jpg") for i in range(len(labels))),
                         labels=torch.tensor(labels, dtype=torch.float32), names=ATTRS, multi_label=True,
                         exclusive=((0, 1, 2),))


def folders(n: int = 3) -> LabeledImages:
    return LabeledImages(root=Path("rafd"), files=(Path("0.jpg"),), labels=torch.tensor([1]),
                         names=tuple(f"d{k}" for k in range(n)), multi_label=False)


def test_celeba_columns_are_single_attributes_then_figure_4_combinations():
    images = celeba([[1, 0, 0, 1, 0]])
    columns = grid_targets(images.labels[0], 0, (images,))
    assert [name for name, _ in columns] == [*ATTRS, "Blond_Hair+Male", "Blond_Hair+Young", "Male+Young",
                                             "Blond_Hair+Male+Young"]
    vectors = {name: c.tolist() for name, c in columns}
    assert vectors["Brown_Hair"] == [0, 0, 1, 1, 0]          # set within the hair group
    assert vectors["Male"] == [1, 0, 0, 0, 0]                # flipped
    assert vectors["Blond_Hair+Male+Young"] == [0, 1, 0, 0, 1]


def test_two_datasets_add_the_other_datasets_domains_with_the_mask_vector():
    both = (celeba([[0, 1, 0, 0, 1]]), folders(3))
    columns = grid_targets(both[0].labels[0], 0, both)
    assert [name for name, _ in columns] == [*ATTRS, "d0", "d1", "d2"]   # no combinations, as released
    assert columns[0][1].tolist() == [1, 0, 0, 0, 1] + [0, 0, 0] + [1, 0]
    assert columns[-1][1].tolist() == [0] * 5 + [0, 0, 1] + [0, 1]
    rafd_columns = grid_targets(both[1].labels[0], 1, both)   # CelebA attributes cannot be edited
    assert [name for name, _ in rafd_columns] == ["d0", "d1", "d2"]


def test_grid_layout_inputs_first_and_short_rows_end_in_white():
    torch.manual_seed(0)
    model = V1ModelConfig(img_size=8, c_dim=5, g_conv_dim=4, d_conv_dim=4, g_repeat_num=1, d_repeat_num=1)
    generator = build_networks(model, with_discriminator=False).generator.train()
    # the second input already has every hair colour: no hair colour to add, so no combinations with H
    images = celeba([[1, 0, 0, 1, 0], [1, 1, 1, 0, 0]])
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    grid, names = translation_grid(generator, x, images.labels, 0, (images,))
    assert len(names) == 9 and generator.training   # the mode is restored
    cell = 8 + GRID_PADDING
    assert grid.shape == (3, 2 * cell + GRID_PADDING, 10 * cell + GRID_PADDING)

    def at(row: int, col: int) -> torch.Tensor:
        top, left = GRID_PADDING + row * cell, GRID_PADDING + col * cell
        return grid[:, top:top + 8, left:left + 8]

    torch.testing.assert_close(at(0, 0), ((x[0] + 1) / 2).clamp(0, 1))
    assert torch.all(at(1, 9) == 1) and not torch.all(at(0, 9) == 1)   # row 2: 5 attributes + Male+Young
    with torch.no_grad():
        c = grid_targets(images.labels[0], 0, (images,))[2][1]
        torch.testing.assert_close(at(0, 3), ((generator.eval()(x[:1], c[None])[0] + 1) / 2).clamp(0, 1))
