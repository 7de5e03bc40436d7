"""The `stargan` command, end to end on a tiny model."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from stargan.cli import main
from stargan.data.demo import make_demo_dataset

TINY = ["--set", "model.img_size=16", "--set", "model.latent_dim=4", "--set", "model.style_dim=8",
        "--set", "model.hidden_dim=16", "--set", "model.max_conv_dim=16", "--set", "model.base_dim=8",
        "--set", "data.batch_size=2", "--set", "data.num_workers=0", "--set", "train.total_iters=2",
        "--set", "train.sample_every=2", "--set", "train.save_every=2", "--set", "train.num_samples=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_demo_dataset(root / "data", img_size=16, train_per_domain=4, val_per_domain=2)
    assert main(["train", "--preset", "demo", "--data", str(data), "--runs", str(root / "runs"),
                 "--no-progress", *TINY]) == 0
    return data, root / "runs" / "00000-demo"


def test_train_creates_a_run(trained, capsys):
    _, run = trained
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "step-000002" / "networks.safetensors").is_file()


def test_resume_extends_a_run(trained):
    _, run = trained
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "train.total_iters=3",
                 "--set", "train.save_every=3"]) == 0
    assert (run / "checkpoints" / "step-000003").is_dir()


def test_sample_and_translate(trained, tmp_path):
    data, run = trained
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--num-styles", "2"]) == 0
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"latent.png", "reference.png", "cycle.png"}

    assert main(["translate", str(run), "--input", str(data / "val" / "circle"), "--domain", "square",
                 "--num-styles", "2", "--out", str(tmp_path / "t")]) == 0
    outs = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert outs == ["00000_square_style0.png", "00000_square_style1.png",
                    "00001_square_style0.png", "00001_square_style1.png"]
    with Image.open(tmp_path / "t" / outs[0]) as image:
        assert image.size == (16, 16)

    ref = data / "val" / "triangle" / "00000.png"
    assert main(["translate", str(run), "--input", str(data / "val" / "circle" / "00000.png"),
                 "--domain", "triangle", "--reference", str(ref), "--out", str(tmp_path / "r")]) == 0
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["00000_triangle.png"]


def test_user_errors_are_one_line(trained, tmp_path, capsys):
    data, run = trained
    assert main(["translate", str(run), "--input", str(data / "val" / "circle"), "--domain", "hexagon",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hexagon" in err and "circle" in err and "Traceback" not in err
    assert main(["train", "--preset", "demo", "--data", str(tmp_path / "missing"), "--runs",
                 str(tmp_path / "runs"), *TINY]) == 2
    assert "train" in capsys.readouterr().err


def test_console_script_lists_presets():
    out = subprocess.run([sys.executable, "-m", "stargan.cli", "presets"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert {"afhq", "celeba_hq", "cpu", "demo"} <= set(out)
