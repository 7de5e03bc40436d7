import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from stargan.config import V1DataConfig, V1ModelConfig
from stargan.data import DataError, train_loader
from stargan.data.v1 import (Batches, Data, condition_vector, fixed_test_batch, folder_splits, open_data,
                             target_labels, transform)
from stargan.data.v1 import default_attr_file

from .test_attributes import CELEBA_ATTRS, SELECTED, image_color, make_celeba

DEMO = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> tuple[Path, Path, list[list[int]]]:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def both(celeba, demo_data) -> Data:
    cfg = V1DataConfig(mode="both", root=str(celeba[0]), rafd_root=str(demo_data), test_size=4)
    return open_data(cfg, V1ModelConfig(c_dim=5, c2_dim=3))


def test_open_celeba_finds_the_attribute_file_next_to_the_image_folder(celeba):
    image_dir, attr_file, _ = celeba
    data = open_data(V1DataConfig(mode="celeba", root=str(image_dir), test_size=4), V1ModelConfig(c_dim=5))
    assert [len(d) for d in data.train] == [8] and [len(d) for d in data.test] == [4]
    assert data.train[0].names == SELECTED and data.sizes == (5,) and data.label_dim == 5
    assert default_attr_file(image_dir) == attr_file


def test_default_attribute_file_inside_the_image_folder(tmp_path):
    (tmp_path / "list_attr_celeba.txt").write_text("")
    assert default_attr_file(tmp_path) == tmp_path / "list_attr_celeba.txt"
    with pytest.raises(DataError, match="neither .* nor .* exists; --set data.attr_file="):
        default_attr_file(tmp_path / "a" / "b")


def test_open_folders_and_both(demo_data, both):
    data = open_data(V1DataConfig(mode="folders", root=str(demo_data)), V1ModelConfig(c_dim=3))
    assert data.train[0].names == DEMO and not data.train[0].multi_label
    assert len(data.train[0]) == 12 and len(data.test[0]) == 6 and data.label_dim == 3
    assert [d.multi_label for d in both.train] == [True, False]
    assert both.sizes == (5, 3) and both.label_dim == V1ModelConfig(c_dim=5, c2_dim=3).label_dim == 10


@pytest.mark.parametrize("mode, model, message", [
    ("celeba", V1ModelConfig(c_dim=4), r"data.attrs selects 5 .* but model.c_dim is 4; --set model.c_dim=5"),
    ("folders", V1ModelConfig(c_dim=5),
     r"has domains 3 \['circle', 'square', 'triangle'\] but model.c_dim is 5; --set model.c_dim=3"),
    ("both", V1ModelConfig(c_dim=5, c2_dim=2), r"model.c2_dim is 2; --set model.c2_dim=3"),
    ("both", V1ModelConfig(c_dim=5), r"model.c2_dim is 0; --set model.c2_dim=N"),
    ("celeba", V1ModelConfig(c_dim=5, c2_dim=3), r"c2_dim is only for data.mode=both: --set model.c2_dim=0"),
])
def test_label_sizes_and_mode_are_checked(celeba, demo_data, mode, model, message):
    root = demo_data if mode == "folders" else celeba[0]
    cfg = V1DataConfig(mode=mode, root=str(root), rafd_root=str(demo_data), test_size=4)
    with pytest.raises(ValueError, match=message):
        open_data(cfg, model)


def test_an_unknown_mode_is_refused_when_the_config_is_built():
    with pytest.raises(ValueError, match=r"data.mode='rafd': expected one of celeba, folders, both"):
        V1DataConfig(mode="rafd")


def test_open_errors_for_missing_roots_and_changed_domains(demo_data, tmp_path):
    with pytest.raises(ValueError, match="data.root is empty"):
        open_data(V1DataConfig(mode="celeba"), V1ModelConfig())
    with pytest.raises(DataError, match="CelebA image folder .*nowhere .*does not exist"):
        open_data(V1DataConfig(mode="celeba", root=str(tmp_path / "nowhere")), V1ModelConfig())
    with pytest.raises(ValueError, match="data.rafd_root is empty"):
        open_data(V1DataConfig(mode="both", root=str(tmp_path)), V1ModelConfig(c2_dim=3))
    cfg = V1DataConfig(mode="folders", root=str(demo_data), domains=("circle", "star", "triangle"))
    with pytest.raises(DataError, match=r"expects \['circle', 'star', 'triangle'\]"):
        open_data(cfg, V1ModelConfig(c_dim=3))


def test_folder_splits_skip_bad_images(tmp_path):
    for split in ("train", "val"):
        for d, name in enumerate(("a", "b")):
            for i in range(2):
                (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (6, 6), (50 * d, 20 * i, 0)).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "train" / "a" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="1 unreadable images"):
        folder_splits(tmp_path)
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        train, test = folder_splits(tmp_path, skip_bad_images=True)
    assert train.labels.tolist() == [0, 0, 1, 1] and train.labels.dtype == torch.long
    assert train.names == test.names == ("a", "b")


def test_condition_vector_single_datasets():
    multi = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    assert torch.equal(condition_vector(multi, 0, [3]), multi)
    one_hot = condition_vector(torch.tensor([2, 0]), 0, [3])
    assert one_hot.dtype == torch.float32 and one_hot.tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"class indices \[3\] out of range for 3 domains"):
        condition_vector(torch.tensor([3]), 0, [3])
    with pytest.raises(ValueError, match=r"must be \[B, 3\] 0/1 or \[B\] class indices"):
        condition_vector(torch.ones(2, 4), 0, [3])


def test_condition_vector_both_is_labels_zeros_and_mask():
    celeba = condition_vector(torch.tensor([[1.0, 0, 1], [0, 1, 0]]), 0, [3, 2])
    assert celeba.tolist() == [[1, 0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1, 0]]
    rafd = condition_vector(torch.tensor([1, 0]), 1, [3, 2])
    assert rafd.tolist() == [[0, 0, 0, 0, 1, 0, 1], [0, 0, 0, 1, 0, 0, 1]]


def test_target_labels_permute_the_batch():
    labels = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    target = target_labels(labels, g)
    assert sorted(target.tolist()) == list(range(10)) and not torch.equal(target, labels)
    rows = torch.tensor([[1.0, 0], [0, 1], [1, 1]])
    assert sorted(target_labels(rows, g).tolist()) == sorted(rows.tolist())


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_batches_are_a_pure_function_of_seed_step_and_rank(both):
    a = Batches(both, img_size=8, batch_size=6, seed=3, crop_size=0)
    b = Batches(both, img_size=8, batch_size=6, seed=3, crop_size=0)
    assert_same(a[5], b[5])
    assert_same(a[4], b[4])
    for other in (a[6], Batches(both, img_size=8, batch_size=6, seed=3, crop_size=0, rank=1)[4],
                  Batches(both, img_size=8, batch_size=6, seed=4, crop_size=0)[4]):
        assert not torch.equal(a[4]["x_real"], other["x_real"])
    loaded = train_loader(a, start_step=4, num_workers=0)
    assert_same(next(loaded), a[4])
    assert_same(next(loaded), a[5])


def test_both_alternates_datasets_by_parity(both):
    batches = Batches(both, img_size=8, batch_size=6, seed=0, crop_size=(178, 256))
    for step in range(4):
        batch = batches[step]
        assert batch["dataset"].dtype == torch.long and batch["dataset"].ndim == 0
        assert batch["dataset"].item() == step % 2
        assert batch["x_real"].shape == (6, 3, 8, 8)
        assert -1 <= batch["x_real"].min() <= batch["x_real"].max() <= 1
        assert batch["c_org"].shape == batch["c_trg"].shape == (6, 10)
        assert batch["alpha"].shape == (6, 1, 1, 1) and 0 <= batch["alpha"].min() <= batch["alpha"].max() < 1
        assert sorted(batch["label_trg"].tolist()) == sorted(batch["label_org"].tolist())
        if step % 2 == 0:
            assert batch["label_org"].shape == (6, 5) and batch["label_org"].dtype == torch.float32
        else:
            assert batch["label_org"].shape == (6,) and batch["label_org"].dtype == torch.long
        assert torch.equal(batch["c_org"], condition_vector(batch["label_org"], step % 2, both))
        assert torch.equal(batch["c_trg"], condition_vector(batch["label_trg"], step % 2, both))


def identify(x: torch.Tensor) -> list[int]:
    """Index of the fake CelebA image (by colour) of each image of a batch."""
    pixels = ((x[:, :, 4, 4] + 1) * 127.5).tolist()
    def distance(rgb: list[float], i: int) -> float:
        return sum(abs(p - c) for p, c in zip(rgb, image_color(i)))
    return [min(range(12), key=lambda i: distance(rgb, i)) for rgb in pixels]


def test_batch_labels_belong_to_their_images(celeba):
    image_dir, _, values = celeba
    data = open_data(V1DataConfig(mode="celeba", root=str(image_dir), test_size=4), V1ModelConfig())
    batch = Batches(data, img_size=8, batch_size=16, seed=0, crop_size=0)[0]
    columns = [CELEBA_ATTRS.index(a) for a in SELECTED]
    train_files = {f.name for f in data.train[0].files}
    for index, label in zip(identify(batch["x_real"]), batch["label_org"].tolist()):
        assert f"{index + 1:06d}.jpg" in train_files
        assert label == [float(values[index][c] == 1) for c in columns]


def test_transform_crops_the_centre_then_resizes(tmp_path):
    img = Image.new("RGB", (24, 20), (255, 0, 0))
    img.paste((0, 0, 255), (6, 4, 18, 16))  # a 12 x 12 blue centre
    x = transform(img, 8, crop_size=12, flip=False)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([-1.0, -1, 1]).view(3, 1, 1).expand(3, 8, 8))
    uncropped = transform(img, 8, crop_size=0, flip=False)
    assert torch.equal(transform(img, 8, crop_size=21, flip=False), uncropped)  # larger than a side: none
    assert uncropped[0].max() == 1  # red border kept


def test_transform_flip_follows_the_generator():
    img = Image.new("RGB", (8, 8), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 8))  # white left half
    plain = transform(img, 8, 0, flip=False)
    seen = {torch.equal(transform(img, 8, 0, True, torch.Generator().manual_seed(s)), plain.flip(-1))
            for s in range(20)}
    assert seen == {True, False}
    with pytest.raises(ValueError, match="needs a generator"):
        transform(img, 8, 0, flip=True)


def test_fixed_test_batch(both):
    test = both.test[0]
    x, labels = fixed_test_batch(test, img_size=8, crop_size=0, num=3, seed=1)
    x2, labels2 = fixed_test_batch(test, img_size=8, crop_size=0, num=3, seed=1)
    assert x.shape == (3, 3, 8, 8) and torch.equal(x, x2) and torch.equal(labels, labels2)
    assert labels.shape == (3, 5) and all(row in test.labels.tolist() for row in labels.tolist())
    first, first_labels = fixed_test_batch(test, img_size=8, crop_size=0, num=10, seed=None)
    assert first.shape[0] == 4 and torch.equal(first_labels, test.labels)  # fewer images than asked
    with pytest.raises(ValueError, match="num must be >= 1"):
        fixed_test_batch(test, 8, 0, num=0)
    with pytest.raises(DataError, match="has no images"):
        fixed_test_batch(dataclasses.replace(test, files=(), labels=torch.zeros(0, 5)), 8, 0, num=1)
