"""End-to-end StarGAN v1 training: run directories, logs, test grids, checkpoints and exact resume."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stargan.checkpoints import CheckpointError, checkpoint_dirs, load_config, load_v1_for_sampling
from stargan.config import V1Config, load_config_yaml
from stargan.imaging import GRID_PADDING
from stargan.sampling.v1 import sample_run
from stargan.training.v1.loop import train
from tests import tiny

# G trains every second iteration and the learning rates decay from step 2: the logs show both
SCHEDULE = ["optim.n_critic=2", "optim.decay_start=2"]
CELEBA_HEADER = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Male", "Young")


def grid_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def cells(n: int, size: int = 16) -> int:
    return n * (size + GRID_PADDING) + GRID_PADDING


def test_run_writes_config_logs_test_grids_and_checkpoints(demo_data, tmp_path):
    ckpt = train(tiny.v1_config(demo_data, *SCHEDULE, "train.total_iters=4", "train.keep_last=1"), tmp_path,
                 show_progress=False)
    assert ckpt == tmp_path / "checkpoints" / "step-000004"
    assert checkpoint_dirs(tmp_path) == [ckpt]   # keep_last=1 pruned step 2
    saved = load_config_yaml(tmp_path / "config.yaml")
    assert saved.arch == "v1" and saved.data.domains == ("circle", "square", "triangle")
    assert load_config(ckpt) == saved
    rows = [json.loads(line) for line in (tmp_path / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"D/real", "D/fake", "D/cls", "D/gp", "G/lr", "D/lr"} <= rows[0].keys()
    assert ["G/rec" in r for r in rows] == [False, True, False, True]   # n_critic = 2
    assert [r["G/lr"] for r in rows] == pytest.approx([1e-4, 1e-4, 1e-4, 5e-5])   # decay from step 2
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    for step in ("000002", "000004"):   # 3 inputs, each followed by the 3 domains
        assert grid_size(tmp_path / "samples" / f"{step}_folders.png") == (cells(4), cells(3))
    config, generator = load_v1_for_sampling(tmp_path)
    assert config == saved and not generator.training


def make_celeba(base: Path, n: int = 10) -> Path:
    rng = random.Random(0)
    (base / "images").mkdir(parents=True)
    lines = [str(n), " ".join(CELEBA_HEADER)]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (20, 20), (rng.randrange(256), 90, 160)).save(base / "images" / name)
        hair = rng.randrange(3)
        values = [i == hair for i in range(3)] + [False] + [rng.random() < 0.5 for _ in range(2)]
        lines.append(name + " " + " ".join("1" if v else "-1" for v in values))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return base / "images"


def test_celeba_and_both_grids_have_the_papers_columns(demo_data, tmp_path):
    celeba = make_celeba(tmp_path / "celeba")
    common = [f"data.root={celeba}", "data.test_size=3", "train.total_iters=1", "train.save_every=100"]
    train(tiny.v1_config(demo_data, "data.mode=celeba", "model.c_dim=5", *common), tmp_path / "a",
          show_progress=False)
    # every input has one hair colour: 5 single attributes + H+G, H+A, G+A, H+G+A
    assert grid_size(tmp_path / "a" / "samples" / "000001_celeba.png") == (cells(1 + 5 + 4), cells(3))
    both = tiny.v1_config(demo_data, "data.mode=both", "model.c_dim=5", "model.c2_dim=3", *common,
                          f"data.rafd_root={demo_data}", "train.total_iters=2")
    train(both, tmp_path / "b", show_progress=False)
    # in both mode as released: single attributes and the other dataset's domains, no combinations
    assert grid_size(tmp_path / "b" / "samples" / "000002_celeba.png") == (cells(1 + 5 + 3), cells(3))
    assert grid_size(tmp_path / "b" / "samples" / "000002_rafd.png") == (cells(1 + 3), cells(3))
    config, generator = load_v1_for_sampling(tmp_path / "b")
    written = sample_run(generator, config, tmp_path / "out", num_images=2)
    assert [p.name for p in written] == ["celeba.png", "rafd.png"]
    assert grid_size(written[1]) == (cells(4), cells(2))


@pytest.mark.slow
def test_resume_gives_identical_weights_optimizers_and_learning_rates(demo_data, tmp_path):
    straight = train(tiny.v1_config(demo_data, *SCHEDULE, "train.total_iters=4"), tmp_path / "a",
                     show_progress=False)
    half = train(tiny.v1_config(demo_data, *SCHEDULE, "train.total_iters=2"), tmp_path / "b",
                 show_progress=False)
    assert half.name == "step-000002"
    torch.manual_seed(12345)   # disturb the global RNG: resume must not depend on it
    resumed = train(tiny.v1_config(demo_data, *SCHEDULE, "train.total_iters=4"), tmp_path / "b", resume=True,
                    show_progress=False)
    a, b = load_file(str(straight / "networks.safetensors")), load_file(str(resumed / "networks.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("discriminator.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = torch.load(straight / "state.pt", weights_only=True)
    state_b = torch.load(resumed / "state.pt", weights_only=True)
    assert state_b["step"] == 4
    for name in ("generator", "discriminator"):
        opt_a, opt_b = state_a["optimizers"][name], state_b["optimizers"][name]
        assert opt_a["param_groups"][0]["lr"] == opt_b["param_groups"][0]["lr"] == pytest.approx(5e-5)
        assert opt_a["state"].keys() == opt_b["state"].keys()
        for i in opt_a["state"]:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(opt_a["state"][i][key], opt_b["state"][i][key]), (name, i, key)
    rows = [json.loads(line) for line in (tmp_path / "b" / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert [(r["step"], r["G/lr"]) for r in rows] == [(1, 1e-4), (2, 1e-4), (3, 1e-4), (4, 5e-5)]


def test_resume_refuses_a_different_model(demo_data, tmp_path):
    train(tiny.v1_config(demo_data, "train.total_iters=1"), tmp_path, show_progress=False)
    with pytest.raises(CheckpointError, match="model.g_repeat_num 1 -> 2"):
        train(tiny.v1_config(demo_data, "train.total_iters=2", "model.g_repeat_num=2"), tmp_path, resume=True,
              show_progress=False)


def test_missing_dataset_is_reported_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="data.root"):
        train(V1Config().with_overrides(["data.mode=folders", "model.c_dim=3"]), tmp_path / "run",
              show_progress=False)
    assert not (tmp_path / "run").exists()
