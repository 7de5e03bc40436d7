"""Every shipped preset trains as shipped (issue 18, point 4).

One test per preset runs real iterations of what ``stargan train --preset NAME`` runs, with the preset's own
precision, memory format, compile setting, image size and network widths; only what does not change
the networks or the step is made small: the data (a few generated images in the preset's layout),
the batch, the iteration count, the sampling and checkpoint cadence, the workers. The losses must be
finite at every step, and config.yaml must record what ``auto`` resolved to on this machine.

The paper's 256 px presets (afhq, celeba_hq; both256 for v1) run at a smaller image size with every
width as shipped (v2's first width, which follows the image size when ``base_dim`` is 0, is pinned to the
shipped one): one 256 px iteration at paper widths takes 25 s of a CPU core, so three of them for each
of three presets would cost 7 minutes; what the size changes is the number of blocks, not the
precision, memory format, compile or width of any layer.

v1 runs until its generator has trained once (``n_critic`` discriminator iterations, on each dataset
in turn with two), so both phases of the released step run at the preset's sizes.

The speed probe of ``auto`` settings caches its answer under ``$XDG_CACHE_HOME/stargan/speed/``: one
cache for the session (a tmp folder, or ``$STARGAN_TEST_CACHE`` when set, for CI to keep between runs),
so its child process measures each preset's candidates once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stargan.config import V2_ONLY_TRAIN, AnyConfig, available_presets, load_config_yaml, load_preset
from stargan.training.v1.loop import train as train_v1
from stargan.training.v2.loop import train

pytestmark = pytest.mark.slow

V2_ITERS = 3
SMALL_IMAGES = 32  # batch 2 up to this image size (it costs nothing there), else 1 (the least the step takes)
TEST_SIZE = {"v2": 64, "v1": 128}  # larger images are tested at this size (the widths as shipped)
# Domain names of the datasets the presets are for (any other v2 preset gets the demo's shapes).
DOMAINS = {"afhq": ("cat", "dog", "wild"), "celeba_hq": ("female", "male"),
           "fmnist_shoes": ("sandal", "sneaker", "ankle_boot")}
RAFD = ("angry", "contemptuous", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
CELEBA_HEADER = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Male", "Young")


@pytest.fixture(scope="session", autouse=True)
def speed_cache(tmp_path_factory):
    """One ``XDG_CACHE_HOME`` for the session: the speed probe runs once per preset and key."""
    folder = os.environ.get("STARGAN_TEST_CACHE") or str(tmp_path_factory.mktemp("xdg-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", folder)
        yield Path(folder)


# ---- data in each preset's layout -----------------------------------------------------------------

def picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    box = sorted(rng.uniform(0, width, 2)) + sorted(rng.uniform(0, height, 2))
    ImageDraw.Draw(image).ellipse([box[0], box[2], box[1], box[3]],
                                  fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def write_folders(root: Path, domains: tuple[str, ...], size: int, train: int = 2, val: int = 1) -> Path:
    """``root/{train,val}/<domain>/*.png``: ``train`` and ``val`` images per domain."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for domain in domains:
            (root / split / domain).mkdir(parents=True)
            for i in range(count):
                picture(rng, size, size).save(root / split / domain / f"{i:03d}.png")
    return root


def write_celeba(base: Path, n: int = 6) -> Path:
    """CelebA's layout: ``base/images/NNNNNN.jpg`` (178 x 218, the aligned images' size) and
    ``base/list_attr_celeba.txt``; returns the image folder."""
    rng, pick = np.random.default_rng(0), random.Random(0)
    (base / "images").mkdir(parents=True)
    lines = [str(n), " ".join(CELEBA_HEADER)]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        picture(rng, 178, 218).save(base / "images" / name)
        hair = pick.randrange(3)
        values = [h == hair for h in range(3)] + [False] + [pick.random() < 0.5 for _ in range(2)]
        lines.append(name + " " + " ".join("1" if v else "-1" for v in values))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return base / "images"


def small_run(name: str, data: Path) -> AnyConfig:
    """The preset with only its data, batch, length, cadence and workers made small."""
    config = load_preset(name)
    if config.model.img_size > TEST_SIZE[config.arch]:
        model = {"img_size": TEST_SIZE[config.arch]}
        if config.arch == "v2":
            model["base_dim"] = config.model.first_dim
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
    size = config.model.img_size
    batch = 2 if size <= SMALL_IMAGES else 1
    common = [f"data.batch_size={batch}", "data.num_workers=0", "train.log_every=1"]
    if config.arch == "v2":
        domains = DOMAINS.get(name, ("circle", "square", "triangle"))
        root = write_folders(data, domains, size)
        iters = V2_ITERS
        extra = [f"data.root={root}", f"train.num_samples={len(domains)}", "eval.every=0"]
    else:
        iters = config.optim.n_critic * (2 if config.data.mode == "both" else 1)
        extra = [f"train.num_samples={batch}"]
        if config.data.mode in ("celeba", "both"):
            extra += [f"data.root={write_celeba(data / 'celeba')}", "data.test_size=2"]
        crop = config.data.rafd_crop_size if config.data.mode == "both" else config.data.crop_size
        label_sizes = {"folders": ("root", config.model.c_dim), "both": ("rafd_root", config.model.c2_dim)}
        if config.data.mode in label_sizes:  # RaFD-like folders, at least as large as the center crop
            key, count = label_sizes[config.data.mode]
            extra += [f"data.{key}={write_folders(data / 'folders', v1_domains(count), max(size, crop))}"]
    length = [f"train.total_iters={iters}", f"train.sample_every={iters}", f"train.save_every={iters}"]
    return config.with_overrides(common + extra + length)


def v1_domains(count: int) -> tuple[str, ...]:
    return RAFD[:count] if count == len(RAFD) else tuple(f"domain{i}" for i in range(count))


def scalar_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "scalars.jsonl").read_text().splitlines()]


# ---- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", available_presets())
def test_preset_trains_as_shipped(name, tmp_path, request):
    shipped = load_preset(name)
    config = small_run(name, tmp_path / "data")
    if shipped.arch == "v2" and shipped.model.w_hpf > 0 and shipped.model.masks:
        request.getfixturevalue("face_files")  # random FAN weights in the release's format
    run = tmp_path / "run"
    ckpt = (train if shipped.arch == "v2" else train_v1)(config, run, show_progress=False)
    assert (ckpt / "networks.safetensors").is_file()
    shutil.rmtree(run / "checkpoints")  # up to 1.3 GB at 256 px, and pytest keeps three sessions' tmp

    rows = scalar_rows(run)
    assert [r["step"] for r in rows] == list(range(1, config.train.total_iters + 1))
    for row in rows:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, f"step {row['step']}: {bad}"
    saved = load_config_yaml(run / "config.yaml")
    if shipped.arch == "v2":
        resolved = (saved.train.precision, saved.train.channels_last, saved.train.compile)
        assert all({"D/latent_real", "D/ref_reg", "G/latent_adv", "G/ref_cyc"} <= r.keys() for r in rows)
        # the domain count comes from the data; every width is the preset's
        widths = {"num_domains": shipped.model.num_domains, "img_size": shipped.model.img_size,
                  "base_dim": shipped.model.base_dim}
        assert dataclasses.replace(saved.model, **widths) == shipped.model
        assert saved.model.first_dim == shipped.model.first_dim
        assert resolved[0] in ("fp32", "bf16") and all(isinstance(v, bool) for v in resolved[1:]), resolved
        for key in ("precision", "channels_last", "compile"):  # what the preset fixes is kept
            if getattr(shipped.train, key) != "auto":
                assert getattr(saved.train, key) == getattr(shipped.train, key), key
    else:
        assert all({"D/real", "D/cls", "D/gp"} <= r.keys() for r in rows)
        generator_steps = [r["step"] for r in rows if "G/rec" in r]  # once on each dataset
        assert len(generator_steps) == (2 if shipped.data.mode == "both" else 1), generator_steps
        assert dataclasses.replace(saved.model, img_size=shipped.model.img_size) == shipped.model
        # v1 has no precision, memory format or compile setting: it trains in fp32, eager, contiguous
        assert set(saved.to_dict()["train"]).isdisjoint(V2_ONLY_TRAIN)
