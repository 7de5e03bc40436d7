import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from stargan.data import TrainBatches, fixed_batch, scan_split, train_loader

SIZES = {"a": 1, "b": 2, "c": 6}      # images per domain: deliberately unequal


def color(domain: int, index: int) -> tuple[int, int, int]:
    return (40 * domain + 20, 30 * index + 10, 200)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    for d, (name, n) in enumerate(SIZES.items()):
        (root / name).mkdir()
        for i in range(n):
            Image.new("RGB", (12, 10), color(d, i)).save(root / name / f"{i}.png")
    return scan_split(root)


def identify(x: torch.Tensor) -> list[tuple[int, int]]:
    """(domain, index) of each single-colour image in a batch [B, 3, S, S]."""
    pixels = ((x[:, :, 0, 0] + 1) * 127.5).round().long().tolist()
    ids = []
    for r, g, _ in pixels:
        assert (r - 20) % 40 == 0 and (g - 10) % 30 == 0, (r, g)
        ids.append(((r - 20) // 40, (g - 10) // 30))
    return ids


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def test_batch_shapes_and_dtypes(folder):
    batch = TrainBatches(folder, img_size=8, batch_size=5, latent_dim=3, seed=0)[0]
    assert set(batch) == {"x_real", "y_org", "x_ref", "x_ref2", "y_trg", "z_trg", "z_trg2"}
    for key in ("x_real", "x_ref", "x_ref2"):
        assert batch[key].shape == (5, 3, 8, 8) and batch[key].dtype == torch.float32
        assert -1 <= batch[key].min() and batch[key].max() <= 1
    for key in ("y_org", "y_trg"):
        assert batch[key].shape == (5,) and batch[key].dtype == torch.long
    for key in ("z_trg", "z_trg2"):
        assert batch[key].shape == (5, 3) and batch[key].dtype == torch.float32


def test_batch_is_a_pure_function_of_seed_and_step(folder):
    batches = TrainBatches(folder, 8, 4, 3, seed=1)
    torch.manual_seed(0)
    first = batches[7]
    torch.manual_seed(99)                                 # the global RNG plays no part
    assert_same(first, TrainBatches(folder, 8, 4, 3, seed=1)[7])
    assert not torch.equal(first["z_trg"], batches[8]["z_trg"])
    assert not torch.equal(first["z_trg"], TrainBatches(folder, 8, 4, 3, seed=2)[7]["z_trg"])
    assert not torch.equal(first["z_trg"], first["z_trg2"])


def test_images_match_labels_and_references_differ(folder):
    batches = TrainBatches(folder, 8, batch_size=16, latent_dim=2, seed=3)
    pairs_seen = 0
    for step in range(20):
        batch = batches[step]
        y_org, y_trg = batch["y_org"].tolist(), batch["y_trg"].tolist()
        assert [d for d, _ in identify(batch["x_real"])] == y_org
        refs, refs2 = identify(batch["x_ref"]), identify(batch["x_ref2"])
        assert [d for d, _ in refs] == y_trg and [d for d, _ in refs2] == y_trg
        for y, r, r2 in zip(y_trg, refs, refs2):
            if list(SIZES.values())[y] > 1:
                assert r != r2
                pairs_seen += 1
            else:
                assert r == r2                           # a one-image domain can only repeat it
    assert pairs_seen > 100


def test_sampling_is_balanced_over_domains_and_uniform_within(folder):
    batches = TrainBatches(folder, 4, batch_size=32, latent_dim=2, seed=0, crop_prob=0.0)
    y_org, y_trg, within_c, z = [], [], [], []
    for step in range(60):
        batch = batches[step]
        y_org += batch["y_org"].tolist()
        y_trg += batch["y_trg"].tolist()
        within_c += [i for d, i in identify(batch["x_real"]) + identify(batch["x_ref2"]) if d == 2]
        z.append(batch["z_trg"])
    # Chi-square, 2 or 5 degrees of freedom: 13.8 and 20.5 are the 0.1% critical values. Sampling in
    # proportion to the domain sizes (1:2:6) would give about 1700 here.
    assert chi_square([y_org.count(d) for d in range(3)]) < 13.8
    assert chi_square([y_trg.count(d) for d in range(3)]) < 13.8
    assert chi_square([within_c.count(i) for i in range(6)]) < 20.5
    z = torch.cat(z)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_gives_the_same_batches_for_any_workers_and_start(folder, num_workers):
    batches = TrainBatches(folder, 8, 3, 2, seed=5)
    loader = train_loader(batches, start_step=4, num_workers=num_workers)
    for step, batch in zip(range(4, 9), loader):
        assert_same(batch, batches[step])
    del loader


def test_loader_from_zero_matches_resumed_loader(folder):
    batches = TrainBatches(folder, 8, 3, 2, seed=5)
    from_zero = list(itertools.islice(train_loader(batches, 0, 0), 6))
    resumed = list(itertools.islice(train_loader(batches, 3, 0), 3))
    for a, b in zip(from_zero[3:], resumed):
        assert_same(a, b)


def test_train_batches_rejects_bad_arguments(folder):
    with pytest.raises(ValueError, match="crop_prob"):
        TrainBatches(folder, 8, 3, 2, seed=0, crop_prob=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        TrainBatches(folder, 8, 0, 2, seed=0)
    with pytest.raises(ValueError, match="seed, step and rank must be >= 0"):
        TrainBatches(folder, 8, 3, 2, seed=-1)[0]


def test_fixed_batch(folder):
    x, y = fixed_batch(folder, img_size=8, per_domain=3, seed=0)
    assert x.shape == (1 + 2 + 3, 3, 8, 8) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 1, 2, 2, 2]
    ids = identify(x)
    assert [d for d, _ in ids] == y.tolist() and len(set(ids)) == 6     # no image twice
    again, _ = fixed_batch(folder, img_size=8, per_domain=3, seed=0)
    assert torch.equal(x, again)
    picks = {tuple(identify(fixed_batch(folder, 8, 3, seed=s)[0])) for s in range(5)}
    assert len(picks) > 1                                                # the seed chooses the images
    with pytest.raises(ValueError, match="per_domain"):
        fixed_batch(folder, 8, 0)


def test_fixed_batch_uses_eval_transform(tmp_path: Path):
    (tmp_path / "d").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "d" / "0.png")
    x, y = fixed_batch(scan_split(tmp_path), img_size=4, per_domain=2)
    assert x.shape == (1, 3, 4, 4) and y.tolist() == [0]
    assert torch.equal(x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
