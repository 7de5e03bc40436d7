"""The dataset image check: results cached per file (path, size, mtime), CelebA and "both" modes checked."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from stargan.config import V1DataConfig, V1ModelConfig
from stargan.data import DataError, image_check, open_dataset, scan_split
from stargan.data.v1 import open_data as open_v1_data
from stargan.data.image_check import CACHE_NAME, CheckCache, find_bad_images, user_cache_file

from .test_attributes import make_celeba


def write(path: Path, color=(10, 20, 30), size=(6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def make_dataset(root: Path, per_domain: int = 3) -> Path:
    for split in ("train", "val"):
        for d, name in enumerate(("cat", "dog")):
            for i in range(per_domain):
                write(root / split / name / f"{i}.png", color=(40 * d, 10 * i, 0))
    return root


@pytest.fixture
def decoded(monkeypatch) -> list[Path]:
    """Every path the check decodes."""
    seen: list[Path] = []
    real = image_check.image_problem

    def spy(path):
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(image_check, "image_problem", spy)
    return seen


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """Keep the fallback cache of these tests out of the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def test_second_open_decodes_nothing_and_changed_files_again(tmp_path, decoded):
    root = make_dataset(tmp_path / "data")
    open_dataset(root)
    assert len(decoded) == 12 and (root / CACHE_NAME).is_file()
    assert scan_split(root / "train").domains == ("cat", "dog")   # the hidden cache is no domain or image

    decoded.clear()
    open_dataset(root)
    assert decoded == []

    changed = write(root / "train" / "cat" / "0.png", color=(1, 2, 3), size=(7, 7))  # new size
    touched = root / "val" / "dog" / "1.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))       # new mtime only
    added = write(root / "val" / "dog" / "new.png")
    decoded.clear()
    open_dataset(root)
    assert sorted(decoded) == sorted([changed, touched, added])


def test_bad_images_are_remembered_and_still_reported(tmp_path, decoded):
    root = make_dataset(tmp_path / "data")
    bad = root / "train" / "dog" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for _ in range(2):
        with pytest.raises(DataError, match=r"(?s)1 unreadable images.*bad.png: not a readable image"):
            open_dataset(root)
    assert decoded.count(bad) == 1
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        train, _ = open_dataset(root, skip_bad_images=True)
    assert bad not in train.files and decoded.count(bad) == 1
    write(bad)                                                   # fixed by the user: checked again
    train, _ = open_dataset(root)
    assert bad in train.files and decoded.count(bad) == 2


def test_read_only_dataset_uses_the_user_cache(tmp_path, decoded, user_cache, monkeypatch):
    root = make_dataset(tmp_path / "data")
    real_write = image_check._write_atomically
    refused = []

    def read_only_root(path, text):  # as on a read-only mount (chmod does not stop root)
        if root in path.parents:
            refused.append(path)
            return False
        return real_write(path, text)

    monkeypatch.setattr(image_check, "_write_atomically", read_only_root)
    open_dataset(root)
    assert refused == [root / CACHE_NAME] and not (root / CACHE_NAME).exists()
    assert user_cache_file(root).is_file() and user_cache in user_cache_file(root).parents
    decoded.clear()
    open_dataset(root)
    assert decoded == []


def test_unwritable_everywhere_and_corrupt_caches_never_fail(tmp_path, decoded, monkeypatch):
    root = make_dataset(tmp_path / "data")
    monkeypatch.setattr(image_check, "_write_atomically", lambda path, text: False)
    open_dataset(root)
    open_dataset(root)
    assert len(decoded) == 24                                    # checked twice, no error
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setattr(image_check, "image_problem", lambda path: decoded.append(path))
    for junk in ("{not json", json.dumps({"checker": image_check._checker(), "files": {"a": "b"}}), "[]"):
        (root / CACHE_NAME).write_text(junk)
        decoded.clear()
        open_dataset(root)
        assert len(decoded) == 12, junk                          # ignored, rewritten
    decoded.clear()
    open_dataset(root)
    assert decoded == []


def test_a_new_pillow_or_limit_checks_again(tmp_path, decoded, monkeypatch):
    root = make_dataset(tmp_path / "data")
    open_dataset(root)
    monkeypatch.setattr(image_check.PIL, "__version__", "0.0-other")
    decoded.clear()
    open_dataset(root)
    assert len(decoded) == 12


def test_cache_keeps_relative_paths_and_drops_deleted_files(tmp_path):
    root = make_dataset(tmp_path / "data")
    open_dataset(root)
    (root / "train" / "cat" / "2.png").unlink()
    open_dataset(root)
    files = json.loads((root / CACHE_NAME).read_text())["files"]
    assert len(files) == 11 and "train/cat/0.png" in files and "train/cat/2.png" not in files
    moved = tmp_path / "moved"
    root.rename(moved)                                           # relative keys survive a move
    cache = CheckCache(moved)
    path = moved / "train" / "cat" / "0.png"
    assert cache.lookup(path, path.stat()) == (True, None)


def test_find_bad_images_without_cache(tmp_path, decoded):
    files = [write(tmp_path / "a.png"), tmp_path / "missing.png"]
    bad = find_bad_images(files, tmp_path, cache=False)
    assert [path for path, _ in bad] == [tmp_path / "missing.png"] and "FileNotFoundError" in bad[0][1]
    assert not (tmp_path / CACHE_NAME).exists()


# ---------------------------------------------------------------------------------------------
# StarGAN v1: CelebA and "both" check their images like folder mode

def celeba_config(image_dir: Path, **changes) -> V1DataConfig:
    return V1DataConfig(mode="celeba", root=str(image_dir), test_size=4, **changes)


def test_celeba_bad_images_stop_or_are_skipped(tmp_path, decoded):
    image_dir, _, _ = make_celeba(tmp_path / "celeba")
    bad = image_dir / "000003.jpg"
    bad.write_bytes(bad.read_bytes()[:40])                       # truncated JPEG
    with pytest.raises(DataError, match=r"(?s)1 unreadable images in .*images:\n  .*000003.jpg: .*--skip-bad"):
        open_v1_data(celeba_config(image_dir), V1ModelConfig(c_dim=5))
    with pytest.warns(UserWarning, match="skipping 1 unreadable images"):
        data = open_v1_data(celeba_config(image_dir, skip_bad_images=True), V1ModelConfig(c_dim=5))
    train, test = data.train[0], data.test[0]
    assert bad not in train.files + test.files and len(train) + len(test) == 11
    assert train.labels.shape == (len(train), 5)
    full = open_v1_data(celeba_config(image_dir), V1ModelConfig(c_dim=5), check_images=False)
    for split, kept in ((full.train[0], train), (full.test[0], test)):
        rows = {f: row for f, row in zip(split.files, split.labels)}
        assert all(torch.equal(rows[f], row) for f, row in zip(kept.files, kept.labels))  # labels follow
    assert decoded.count(bad) == 1                               # the second open read the cache
    assert (image_dir / CACHE_NAME).is_file()


def test_both_mode_checks_both_datasets(tmp_path):
    image_dir, _, _ = make_celeba(tmp_path / "celeba")
    rafd = make_dataset(tmp_path / "rafd")
    (rafd / "val" / "dog" / "bad.png").write_bytes(b"junk")
    (image_dir / "000005.jpg").write_bytes(b"")
    cfg = V1DataConfig(mode="both", root=str(image_dir), rafd_root=str(rafd), test_size=4)
    with pytest.raises(DataError, match="000005.jpg: not a readable image"):
        open_v1_data(cfg, V1ModelConfig(c_dim=5, c2_dim=2))
    with pytest.warns(UserWarning) as record:
        data = open_v1_data(V1DataConfig(**{**cfg.__dict__, "skip_bad_images": True}),
                            V1ModelConfig(c_dim=5, c2_dim=2))
    assert len(record) == 2
    assert image_dir / "000005.jpg" not in data.train[0].files + data.test[0].files
    assert rafd / "val" / "dog" / "bad.png" not in data.test[1].files


def test_celeba_with_every_training_image_bad_is_an_error(tmp_path):
    image_dir, _, _ = make_celeba(tmp_path / "celeba", n=6)
    for path in image_dir.glob("*.jpg"):
        path.write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="every training image .* is unreadable"):
        open_v1_data(celeba_config(image_dir, skip_bad_images=True), V1ModelConfig(c_dim=5))


def test_no_progress_silences_the_check_bar(tmp_path, capsys):
    from PIL import Image

    from stargan.data.image_check import find_bad_images

    files = []
    for i in range(210):  # the bar shows from 200 files to decode on
        path = tmp_path / f"{i:03d}.png"
        Image.new("RGB", (4, 4)).save(path)
        files.append(path)
    assert find_bad_images(files, tmp_path, cache=False, progress=False) == []
    assert "checking images" not in capsys.readouterr().err
    find_bad_images(files, tmp_path, cache=False)
    assert "checking images" in capsys.readouterr().err
