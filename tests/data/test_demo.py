import json
import time

import numpy as np
import pytest
from PIL import Image

from stargan.data import DEMO_DOMAINS, DataError, make_demo_dataset, open_dataset

SMALL = dict(img_size=32, train_per_domain=100, val_per_domain=5, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "shapes", **SMALL)


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def measure(path):
    """Fill ratio of the object in its circumscribed circle, centroid, radius, object and background colour."""
    pixels = np.asarray(Image.open(path)).astype(np.float64)
    mask = pixels.max(-1) > 160          # objects are bright (value >= 0.75), backgrounds dark (<= 0.5)
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max() + 0.5
    fill = mask.sum() / (np.pi * radius**2)  # circle ~0.9, square ~0.64, triangle ~0.44
    return fill, cx, cy, radius, pixels[mask].mean(0), pixels[~mask].mean(0)


def test_layout_and_counts(small):
    assert DEMO_DOMAINS == ("circle", "square", "triangle")
    train, val = open_dataset(small)
    assert train.domains == val.domains == DEMO_DOMAINS
    assert [len(train.indices_of(d)) for d in range(3)] == [100] * 3
    assert [len(val.indices_of(d)) for d in range(3)] == [5] * 3
    assert train.files[0] == small / "train" / "circle" / "00000.png"
    with Image.open(train.files[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert json.loads((small / ".complete").read_text())["train_per_domain"] == 100
    assert not (small / ".generating").exists()


def test_generation_is_deterministic(small, tmp_path):
    again = make_demo_dataset(tmp_path / "again", **SMALL)
    assert files(again) == files(small)
    assert all((again / f).read_bytes() == (small / f).read_bytes() for f in files(small))
    other = make_demo_dataset(tmp_path / "other", **{**SMALL, "seed": 1, "train_per_domain": 2})
    assert (other / "val/circle/00000.png").read_bytes() != (small / "val/circle/00000.png").read_bytes()


def test_shapes_tell_domains_apart(small):
    train, _ = open_dataset(small, check_images=False)
    for label, name in enumerate(DEMO_DOMAINS):
        fills = np.array([measure(p)[0] for p in train.files_of(label)])
        low, high = {"circle": (0.75, 1.1), "square": (0.52, 0.75), "triangle": (0.3, 0.52)}[name]
        assert np.mean((fills > low) & (fills < high)) >= 0.98, name


def test_content_and_colours_are_distributed_alike_in_every_domain(small):
    train, _ = open_dataset(small, check_images=False)
    stats = []
    for label in range(3):
        m = [measure(p) for p in train.files_of(label)]
        stats.append({
            "centre": np.mean([(cx, cy) for _, cx, cy, _, _, _ in m], 0),
            "radius": np.mean([r for _, _, _, r, _, _ in m]),
            "object": np.mean([o for *_, o, _ in m], 0), "object_std": np.std([o for *_, o, _ in m], 0),
            "background": np.mean([b for *_, b in m], 0), "background_std": np.std([b for *_, b in m], 0),
        })
    for a in stats:
        assert np.all(a["object_std"] > 30) and np.all(a["background_std"] > 15)   # style varies
        assert np.all(np.abs(a["centre"] - 15.5) < 1.5)                          # pixel centre of 32 px
        for b in stats:
            assert np.abs(a["centre"] - b["centre"]).max() < 1.5
            assert abs(a["radius"] - b["radius"]) < 1.5    # thin triangle tips read ~0.9 px short
            assert np.abs(a["object"] - b["object"]).max() < 30
            assert np.abs(a["background"] - b["background"]).max() < 15


def test_existing_dataset_is_reused_and_other_settings_regenerate(tmp_path):
    params = dict(img_size=16, train_per_domain=2, val_per_domain=1)
    out = make_demo_dataset(tmp_path / "d", **params)
    probe = out / "train" / "square" / "00001.png"
    probe.write_bytes(b"edited")
    assert make_demo_dataset(out, **params) == out
    assert probe.read_bytes() == b"edited"                     # skipped: nothing rewritten
    make_demo_dataset(out, **params, seed=3)
    assert probe.read_bytes() != b"edited"
    assert json.loads((out / ".complete").read_text())["seed"] == 3


def test_interrupted_generation_is_redone(tmp_path):
    params = dict(img_size=16, train_per_domain=2, val_per_domain=1)
    out = make_demo_dataset(tmp_path / "d", **params)
    reference = {f: (out / f).read_bytes() for f in files(out)}
    # What an interruption leaves: the in-progress marker, no .complete, partial files.
    (out / ".complete").unlink()
    (out / ".generating").touch()
    (out / "train" / "circle" / "00000.png").write_bytes(b"half")
    (out / "train" / "circle" / "99999.png").write_bytes(b"stray")
    make_demo_dataset(out, **params)
    assert {f: (out / f).read_bytes() for f in files(out)} == reference


def test_refuses_to_overwrite_a_folder_that_is_not_a_demo_dataset(tmp_path):
    mine = tmp_path / "mine" / "train" / "cats" / "0.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"precious")
    with pytest.raises(DataError, match=r"not a demo dataset.*\.complete"):
        make_demo_dataset(tmp_path / "mine", img_size=16, train_per_domain=1, val_per_domain=1)
    assert mine.read_bytes() == b"precious"
    with pytest.raises(ValueError, match="img_size >= 8"):
        make_demo_dataset(tmp_path / "x", img_size=4)


def test_default_dataset_is_quick(tmp_path):
    # CPU seconds of this process (the generator is single-process): a shared, busy machine stretches
    # wall time (CI saw 10.9 s beside two training runs) but not the work done.
    start = time.process_time()
    out = make_demo_dataset(tmp_path / "default")
    elapsed = time.process_time() - start
    assert len(list((out / "train").rglob("*.png"))) == 3 * 600
    assert len(list((out / "val").rglob("*.png"))) == 3 * 32
    assert elapsed < 5, f"default demo dataset took {elapsed:.1f} CPU s (budget 5 s; 1.4 s here)"
