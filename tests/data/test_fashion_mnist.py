"""Fashion-MNIST idx files -> 32 px RGB domain folders, on tiny fake idx files."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stargan.data import DataError
from stargan.data.fashion_mnist import CLASSES, DEBIAN_DIR, make_fashion_mnist, read_idx

SANDAL, SNEAKER, ANKLE_BOOT, T_SHIRT = 5, 7, 9, 0
TRAIN_LABELS = [SANDAL, SNEAKER, ANKLE_BOOT, SANDAL, T_SHIRT, SNEAKER, SANDAL]
VAL_LABELS = [ANKLE_BOOT, SANDAL, SNEAKER, SNEAKER, T_SHIRT]
INSTALL = "apt-get install dataset-fashion-mnist"


def pattern(n: int, offset: int) -> np.ndarray:
    """n distinct 28x28 uint8 images (image i differs from every other one)."""
    base = np.arange(28 * 28, dtype=np.int64).reshape(28, 28)
    return np.stack([(base * (i + 1) + 37 * i + offset) % 256 for i in range(n)]).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    magic = {3: 0x00000803, 1: 0x00000801}[array.ndim]
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_source(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    arrays = {"train-images-idx3-ubyte": pattern(len(TRAIN_LABELS), 0),
              "train-labels-idx1-ubyte": np.array(TRAIN_LABELS, dtype=np.uint8),
              "t10k-images-idx3-ubyte": pattern(len(VAL_LABELS), 100),
              "t10k-labels-idx1-ubyte": np.array(VAL_LABELS, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


def pngs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def padded(image: np.ndarray) -> np.ndarray:
    """The expected 32x32x3 PNG content: the 28x28 grey image centred on black, in all three channels."""
    out = np.zeros((32, 32, 3), dtype=np.uint8)
    out[2:30, 2:30] = image[:, :, None]
    return out


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_chosen_classes_become_padded_rgb_folders(tmp_path, gz):
    arrays = write_source(tmp_path / "src", gz=gz)
    out = make_fashion_mnist(tmp_path / "out", classes="ankle_boot,sandal", source=tmp_path / "src",
                             progress=False)
    assert out == tmp_path / "out"
    assert pngs(out) == ["train/ankle_boot/00000.png",
                         "train/sandal/00000.png", "train/sandal/00001.png", "train/sandal/00002.png",
                         "val/ankle_boot/00000.png", "val/sandal/00000.png"]
    train, val = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    expected = {"train/ankle_boot/00000.png": train[2], "train/sandal/00000.png": train[0],
                "train/sandal/00001.png": train[3], "train/sandal/00002.png": train[6],
                "val/ankle_boot/00000.png": val[0], "val/sandal/00000.png": val[1]}
    for name, image in expected.items():
        with Image.open(out / name) as png:
            assert png.mode == "RGB" and png.size == (32, 32), name
            np.testing.assert_array_equal(np.asarray(png), padded(image), err_msg=name)
    # the names keep their order in the settings, which is what a later call is compared with
    assert json.loads((out / ".complete").read_text()) == {
        "classes": ["ankle_boot", "sandal"], "max_per_class": 0, "pad": 2}
    assert not (out / ".writing").exists()


def test_class_names_map_to_their_labels(tmp_path):
    write_source(tmp_path / "src")
    out = make_fashion_mnist(tmp_path / "out", classes=["sneaker", "t-shirt", "sandal"],
                             source=tmp_path / "src", progress=False)
    counts = {d.name: len(list(d.iterdir())) for d in sorted((out / "train").iterdir())}
    assert counts == {"sandal": 3, "sneaker": 2, "t-shirt": 1}
    counts = {d.name: len(list(d.iterdir())) for d in sorted((out / "val").iterdir())}
    assert counts == {"sandal": 1, "sneaker": 2, "t-shirt": 1}


def test_max_per_class_keeps_the_first_images(tmp_path):
    arrays = write_source(tmp_path / "src")
    out = make_fashion_mnist(tmp_path / "out", classes="sandal,sneaker", source=tmp_path / "src",
                             max_per_class=2, progress=False)
    assert pngs(out) == ["train/sandal/00000.png", "train/sandal/00001.png",
                         "train/sneaker/00000.png", "train/sneaker/00001.png",
                         "val/sandal/00000.png", "val/sneaker/00000.png", "val/sneaker/00001.png"]
    with Image.open(out / "train" / "sandal" / "00001.png") as png:
        np.testing.assert_array_equal(np.asarray(png), padded(arrays["train-images-idx3-ubyte"][3]))


def test_same_settings_reuse_the_folder_other_settings_rewrite_it(tmp_path):
    write_source(tmp_path / "src")
    out = make_fashion_mnist(tmp_path / "out", classes="sandal,sneaker", source=tmp_path / "src",
                             progress=False)
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (tmp_path / "src").rename(tmp_path / "elsewhere")              # reuse does not need the source
    assert make_fashion_mnist(out, classes="sandal,sneaker", source=tmp_path / "src", progress=False) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == first

    (tmp_path / "elsewhere").rename(tmp_path / "src")
    make_fashion_mnist(out, classes="sandal,ankle_boot", source=tmp_path / "src", max_per_class=1,
                       progress=False)
    assert pngs(out) == ["train/ankle_boot/00000.png", "train/sandal/00000.png",
                         "val/ankle_boot/00000.png", "val/sandal/00000.png"]       # sneaker/ is gone
    assert json.loads((out / ".complete").read_text())["classes"] == ["sandal", "ankle_boot"]


def test_an_interrupted_conversion_is_redone(tmp_path, monkeypatch):
    write_source(tmp_path / "src")
    saves = []

    def failing_save(self, path, *args, **kwargs):
        if len(saves) == 2:
            raise KeyboardInterrupt
        saves.append(path)
        return real_save(self, path, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_fashion_mnist(tmp_path / "out", classes="sandal,sneaker", source=tmp_path / "src",
                           progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "out" / ".complete").exists()
    out = make_fashion_mnist(tmp_path / "out", classes="sandal,sneaker", source=tmp_path / "src",
                             progress=False)
    assert len(pngs(out)) == 3 + 2 + 1 + 2 and (out / ".complete").is_file()


def test_refuses_a_folder_it_did_not_write(tmp_path):
    write_source(tmp_path / "src")
    (tmp_path / "mine" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "cats" / "keep.png").write_bytes(b"not ours")
    with pytest.raises(DataError, match="already has train/ or val/ but was not written by this command"):
        make_fashion_mnist(tmp_path / "mine", classes="sandal,sneaker", source=tmp_path / "src",
                           progress=False)
    assert (tmp_path / "mine" / "train" / "cats" / "keep.png").read_bytes() == b"not ours"
    assert not (tmp_path / "mine" / "train" / "sandal").exists()


def test_unknown_class_lists_the_valid_names(tmp_path):
    with pytest.raises(DataError) as err:
        make_fashion_mnist(tmp_path / "out", classes="sandal,boot", source=tmp_path)
    message = str(err.value)
    assert "unknown: ['boot']" in message
    assert "valid names: " + ", ".join(CLASSES) in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("classes", ["sandal", "sandal,sandal", " , sandal,"])
def test_needs_two_different_classes(tmp_path, classes):
    with pytest.raises(DataError, match="at least two different Fashion-MNIST classes"):
        make_fashion_mnist(tmp_path / "out", classes=classes, source=tmp_path)


def test_missing_source_folder_says_how_to_install(tmp_path):
    with pytest.raises(DataError) as err:
        make_fashion_mnist(tmp_path / "out", source=tmp_path / "nowhere")
    assert f"Fashion-MNIST folder {tmp_path / 'nowhere'} does not exist" in str(err.value)
    assert INSTALL in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_file_is_named(tmp_path):
    write_source(tmp_path / "src")
    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        make_fashion_mnist(tmp_path / "out", source=tmp_path / "src", progress=False)
    expected = f"{tmp_path / 'src'} has no t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte)"
    assert expected in str(err.value)
    assert INSTALL in str(err.value)
    assert not (tmp_path / "out").exists()                        # nothing written before all files are read


def test_wrong_magic(tmp_path):
    write_source(tmp_path / "src", gz=False)
    labels = tmp_path / "src" / "train-labels-idx1-ubyte"
    images = tmp_path / "src" / "train-images-idx3-ubyte"
    labels.write_bytes(images.read_bytes())                       # a 3-d file where the 1-d labels belong
    with pytest.raises(DataError) as err:
        make_fashion_mnist(tmp_path / "out", source=tmp_path / "src", progress=False)
    assert str(err.value) == (f"{labels} is not a 1-d idx file of unsigned bytes (magic 2051, expected "
                              "0x00000801)")


@pytest.mark.parametrize("keep", [2, 10, -5], ids=["no-magic", "short-header", "short-data"])
def test_truncated_file(tmp_path, keep):
    write_source(tmp_path / "src", gz=False)
    images = tmp_path / "src" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:keep])
    with pytest.raises(DataError, match="is not a 3-d idx file|is truncated") as err:
        make_fashion_mnist(tmp_path / "out", source=tmp_path / "src", progress=False)
    if keep == -5:
        assert str(err.value) == (f"{images} is truncated: header says (7, 28, 28) (5488 values) but it "
                                  "holds 5483")
    if keep == 10:
        assert str(err.value) == f"{images} is truncated: 10 bytes, shorter than its 16-byte header"


def test_truncated_gzip_stream(tmp_path):
    write_source(tmp_path / "src")
    labels = tmp_path / "src" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    with pytest.raises(DataError, match=f"cannot read {labels}"):
        read_idx(labels, 1)


def test_images_and_labels_must_agree_before_anything_is_written(tmp_path):
    write_source(tmp_path / "src", gz=False)
    (tmp_path / "src" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([5, 7], dtype=np.uint8)))
    with pytest.raises(DataError, match="val has 5 images but 2 labels"):
        make_fashion_mnist(tmp_path / "out", classes="sandal,sneaker", source=tmp_path / "src",
                           progress=False)
    assert not (tmp_path / "out").exists()


def test_a_class_absent_from_a_split_is_an_error(tmp_path):
    write_source(tmp_path / "src")
    with pytest.raises(DataError, match="the train labels have no bag; are these the Fashion-MNIST files"):
        make_fashion_mnist(tmp_path / "out", classes="sandal,bag", source=tmp_path / "src", progress=False)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason=f"{DEBIAN_DIR} not installed ({INSTALL})")
def test_real_training_labels():
    path = next(p for p in (DEBIAN_DIR / "train-labels-idx1-ubyte.gz", DEBIAN_DIR / "train-labels-idx1-ubyte")
                if p.is_file())
    labels = read_idx(path, 1)
    assert labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [6000] * 10
