from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan import imaging
from stargan.sampling import v2 as sampling
from stargan.nets.v2 import Networks, build_networks
from tests import tiny

PAD = imaging.GRID_PADDING


def tiny_nets(img_size: int = 16, num_domains: int = 2, **changes) -> Networks:
    torch.manual_seed(0)
    return build_networks(tiny.v2_model(img_size=img_size, num_domains=num_domains, **changes),
                          with_discriminator=False)


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grid_shape(rows: int, cols: int, size: int) -> tuple[int, int, int]:
    return (3, rows * (size + PAD) + PAD, cols * (size + PAD) + PAD)


def cell(grid: torch.Tensor, row: int, col: int, size: int) -> torch.Tensor:
    top, left = row * (size + PAD) + PAD, col * (size + PAD) + PAD
    return grid[:, top:top + size, left:left + size]


def unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


@pytest.fixture
def nets() -> Networks:
    return tiny_nets()


@pytest.mark.parametrize("size,num_domains", [(16, 2), (32, 3)])
def test_grid_shapes_and_ranges(size: int, num_domains: int) -> None:
    nets = tiny_nets(size, num_domains)
    n, k, r = 3, 2, 2
    x, y = images(n, size), torch.arange(n) % num_domains
    z = torch.randn(k, 4)
    grids = {
        "cycle": (sampling.cycle_grid(nets, x, y, x.flip(0), y.flip(0)), grid_shape(4, n, size)),
        "latent": (sampling.latent_grid(nets, x, num_domains, z, psi=0.7),
                   grid_shape(1 + num_domains * k, n, size)),
        "reference": (sampling.reference_grid(nets, x, x[:r], y[:r]), grid_shape(1 + r, n + 1, size)),
    }
    for name, (grid, shape) in grids.items():
        assert grid.shape == shape, name
        assert grid.min() >= 0 and grid.max() <= 1, name


def test_reference_grid_cells_are_translations(nets: Networks) -> None:
    x_src, x_ref, y_ref = images(3, 16, seed=1), images(2, 16, seed=2), torch.tensor([1, 0])
    grid = sampling.reference_grid(nets, x_src, x_ref, y_ref)
    assert torch.equal(cell(grid, 0, 0, 16), torch.ones(3, 16, 16))  # white corner
    with torch.no_grad():
        for j in range(3):
            assert torch.allclose(cell(grid, 0, j + 1, 16), unit(x_src[j]))
        for i in range(2):
            assert torch.allclose(cell(grid, i + 1, 0, 16), unit(x_ref[i]))
            s = nets.style_encoder(x_ref[i:i + 1], y_ref[i:i + 1])
            for j in range(3):
                expected = unit(nets.generator(x_src[j:j + 1], s)[0])
                assert torch.allclose(cell(grid, i + 1, j + 1, 16), expected, atol=1e-5)


def test_cycle_grid_rows(nets: Networks) -> None:
    x_src, x_ref = images(2, 16, seed=1), images(2, 16, seed=2)
    y_src, y_ref = torch.tensor([0, 1]), torch.tensor([1, 1])
    grid = sampling.cycle_grid(nets, x_src, y_src, x_ref, y_ref)
    with torch.no_grad():
        fake = nets.generator(x_src, nets.style_encoder(x_ref, y_ref))
        rec = nets.generator(fake, nets.style_encoder(x_src, y_src))
    for j in range(2):
        assert torch.allclose(cell(grid, 2, j, 16), unit(fake[j]), atol=1e-5)
        assert torch.allclose(cell(grid, 3, j, 16), unit(rec[j]), atol=1e-5)
    with pytest.raises(ValueError, match="one reference"):
        sampling.cycle_grid(nets, x_src, y_src, x_ref[:1], y_ref[:1])


def test_latent_grid_psi_zero_collapses_to_mean_style(nets: Networks) -> None:
    x, z = images(2, 16), torch.randn(3, 4)
    grid = sampling.latent_grid(nets, x, 2, z, psi=0.0, generator=torch.Generator().manual_seed(0))
    rows = [cell(grid, r, 0, 16) for r in range(1, 7)]  # domain 0: rows 1-3, domain 1: rows 4-6
    for first, others in ((rows[0], rows[1:3]), (rows[3], rows[4:6])):
        for other in others:
            assert torch.allclose(first, other, atol=1e-6)
    assert not torch.allclose(rows[0], rows[3])
    diverse = sampling.latent_grid(nets, x, 2, z, psi=1.0)
    assert not torch.allclose(cell(diverse, 1, 0, 16), cell(diverse, 2, 0, 16))


def test_mean_style_is_a_seeded_average(nets: Networks) -> None:
    def seeded(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    a = sampling.mean_style(nets, 1, num=2500, generator=seeded(3))
    assert a.shape == (1, 8)
    assert torch.equal(a, sampling.mean_style(nets, 1, num=2500, generator=seeded(3)))
    assert not torch.equal(a, sampling.mean_style(nets, 1, num=2500, generator=seeded(4)))
    # Chunks of 1000, 1000 and 500 codes, averaged.
    g = seeded(3)
    with torch.no_grad():
        styles = [nets.mapping_network(torch.randn(n, 4, generator=g), torch.ones(n, dtype=torch.long))
                  for n in (1000, 1000, 500)]
    assert torch.allclose(a, torch.cat(styles).mean(0, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        sampling.mean_style(nets, 2)


def test_translate_needs_exactly_one_style_source(nets: Networks) -> None:
    x = images(2, 16)
    with pytest.raises(ValueError, match="exactly one.*both"):
        sampling.translate(nets, x, 0, z=torch.randn(2, 4), x_ref=x)
    with pytest.raises(ValueError, match="exactly one.*neither"):
        sampling.translate(nets, x, 0)


def test_translate_broadcasts_and_matches_networks(nets: Networks) -> None:
    x, refs = images(1, 16, seed=1), images(3, 16, seed=2)
    z = torch.randn(3, 4)
    out = sampling.translate(nets, x, 1, z=z)
    assert out.shape == (3, 3, 16, 16)
    y = torch.ones(3, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(out, nets.generator(x.expand(3, -1, -1, -1), nets.mapping_network(z, y)),
                              atol=1e-5)
        by_ref = sampling.translate(nets, x, torch.tensor([1, 1, 1]), x_ref=refs)
        assert torch.allclose(by_ref, nets.generator(x.expand(3, -1, -1, -1),
                                                     nets.style_encoder(refs, y)), atol=1e-5)
    with pytest.raises(ValueError, match="psi"):
        sampling.translate(nets, x, 1, x_ref=refs, psi=0.5)
    with pytest.raises(ValueError, match="must match"):
        sampling.translate(nets, images(2, 16), 1, z=z)
    with pytest.raises(ValueError, match="img_size=16"):
        sampling.translate(nets, images(1, 32), 1, z=z)
    with pytest.raises(ValueError, match="out of range"):
        sampling.translate(nets, x, 5, z=z)


def test_sampling_restores_training_mode(nets: Networks) -> None:
    nets.generator.train()
    nets.style_encoder.eval()
    modes_inside: list[bool] = []
    nets.generator.register_forward_hook(lambda module, *_: modes_inside.append(module.training))
    sampling.translate(nets, images(1, 16), 0, x_ref=images(1, 16))
    assert modes_inside == [False]
    assert nets.generator.training and not nets.style_encoder.training


def test_save_grid_writes_png_atomically(nets: Networks, tmp_path: Path) -> None:
    x = images(3, 16)
    grid = sampling.reference_grid(nets, x, x[:2], torch.tensor([0, 1]))
    path = imaging.save_grid(grid, tmp_path / "a" / "b" / "grid.png")
    assert path == tmp_path / "a" / "b" / "grid.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (grid.shape[2], grid.shape[1])
        expected = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(image), expected)
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temp file left
    with pytest.raises(ValueError, match=r"\.png"):
        imaging.save_grid(grid, tmp_path / "grid.jpg")


def test_sample_grids_spreads_sources_over_the_batch_and_is_seeded(nets: Networks) -> None:
    x, y = images(6, 16), torch.tensor([0, 0, 0, 1, 1, 1])
    grids = sampling.sample_grids(nets, x, y, num_images=3, num_styles=2, seed=5)
    assert set(grids) == {"cycle", "latent", "reference"}
    assert grids["latent"].shape == grid_shape(1 + 2 * 2, 3, 16)
    assert grids["reference"].shape == grid_shape(1 + 3, 3 + 1, 16)
    # sources are images 0, 2 (rounded 2.5 -> 2) and 5; references the same, shifted by one
    for col, index in enumerate([0, 2, 5]):
        torch.testing.assert_close(cell(grids["cycle"], 0, col, 16), unit(x[index]))
    torch.testing.assert_close(cell(grids["cycle"], 1, 0, 16), unit(x[5]))
    again = sampling.sample_grids(nets, x, y, num_images=3, num_styles=2, seed=5)
    assert torch.equal(again["latent"], grids["latent"])
    other = sampling.sample_grids(nets, x, y, num_images=3, num_styles=2, seed=6)
    assert not torch.equal(other["latent"], grids["latent"])


# ---------------------------------------------------------------- face masks (w_hpf > 0)

def hpf_nets() -> Networks:
    return tiny_nets(32, w_hpf=1.0)


class RecordingMasks:
    """A mask function that depends on its input and remembers every input it was given."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.inputs.append(x.clone())
        m = torch.nn.functional.interpolate(x.mean(1, keepdim=True), size=256, mode="bilinear")
        return torch.sigmoid(4 * m), torch.sigmoid(-4 * m)


def test_grids_and_translation_use_the_masks_of_each_generator_input():
    nets, x = hpf_nets(), images(2, 32)
    y = torch.tensor([0, 1])
    G, E = nets.generator, nets.style_encoder
    masks = RecordingMasks()
    grid = sampling.cycle_grid(nets, x, y, x.flip(0), y.flip(0), mask_fn=masks)
    assert len(masks.inputs) == 2 and torch.equal(masks.inputs[0], x)
    with torch.no_grad():
        fake = G(x, E(x.flip(0), y.flip(0)), masks=masks(x))
        rec = G(fake, E(x, y), masks=masks(fake))        # the reconstruction: masks of the translation
        rec_with_source_masks = G(fake, E(x, y), masks=masks(x))
    torch.testing.assert_close(masks.inputs[1], fake)
    torch.testing.assert_close(cell(grid, 3, 0, 32), unit(rec[0]))
    assert not torch.allclose(cell(grid, 3, 0, 32), unit(rec_with_source_masks[0]))

    for make in (lambda m: sampling.latent_grid(nets, x, 2, torch.randn(2, 4), mask_fn=m),
                 lambda m: sampling.reference_grid(nets, x, x[:1], y[:1], mask_fn=m),
                 lambda m: sampling.translate(nets, x[:1], 1, z=torch.randn(3, 4), mask_fn=m)):
        masks = RecordingMasks()
        make(masks)
        assert len(masks.inputs) == 1                     # the sources' masks, computed once
    assert masks.inputs[0].shape == (1, 3, 32, 32)        # one source for 3 codes: masked once
    z3 = torch.randn(3, 4)
    with torch.no_grad():
        s3 = nets.mapping_network(z3, torch.tensor([1, 1, 1]))
        expected3 = G(x[:1].expand(3, -1, -1, -1), s3, masks=masks(x[:1].expand(3, -1, -1, -1)))
    torch.testing.assert_close(sampling.translate(nets, x[:1], 1, z=z3, mask_fn=masks), expected3)

    z = torch.randn(1, 4)
    with torch.no_grad():
        expected = G(x, nets.mapping_network(z.expand(2, -1), torch.tensor([1, 1])), masks=masks(x))
    torch.testing.assert_close(sampling.translate(nets, x, 1, z=z, mask_fn=masks), expected)
    assert not torch.allclose(sampling.translate(nets, x, 1, z=z), expected)
