"""The `stargan` command, end to end on a tiny model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from stargan.cli import main
from stargan.imaging import GRID_PADDING
from tests import tiny

TINY = tiny.as_cli_flags(tiny.V2 + ["train.total_iters=2"])


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli") / "runs"
    assert main(["train", "--preset", "demo", "--data", str(demo_data), "--runs", str(runs), "--no-progress",
                 *TINY]) == 0
    return demo_data, runs / "00000-demo"


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


def test_interpolate_latent_and_references(trained, tmp_path, capsys):
    data, run = trained
    source = str(data / "val" / "circle" / "00000.png")
    walk = ["interpolate", str(run), "--input", source, "--latent", "--num-styles", "2", "--frames", "2"]
    assert main([*walk, "--out", str(tmp_path / "all.gif")]) == 0
    assert main([*walk, "--domains", "triangle,square", "--out", str(tmp_path / "two.gif")]) == 0
    assert main([*walk, "--domain", "square", "--psi", "0.7", "--out", str(tmp_path / "one.gif")]) == 0
    for name, frames in [("all", 3 * 2 * 2), ("two", 2 * 2 * 2), ("one", 2 * 2)]:
        with Image.open(tmp_path / f"{name}.gif") as gif:
            assert (gif.n_frames, gif.size) == (frames, (32, 16)), name
    # A seed gives the same file; another seed another one. An existing file is replaced, and said so.
    assert main([*walk, "--seed", "0", "--out", str(tmp_path / "again.gif")]) == 0
    assert (tmp_path / "again.gif").read_bytes() == (tmp_path / "all.gif").read_bytes()
    capsys.readouterr()
    assert main([*walk, "--seed", "1", "--out", str(tmp_path / "again.gif")]) == 0
    assert "replaced" in capsys.readouterr().out
    assert (tmp_path / "again.gif").read_bytes() != (tmp_path / "all.gif").read_bytes()

    refs = [str(data / "val" / "square" / name) for name in ("00000.png", "00001.png")]
    assert main(["interpolate", str(run), "--input", source, "--references", *refs, "--domain", "square",
                 "--frames", "2", "--out", str(tmp_path / "refs.gif")]) == 0
    with Image.open(tmp_path / "refs.gif") as gif:
        assert (gif.n_frames, gif.size) == (2 * 2, (32, 16))


@pytest.mark.parametrize("flags,message", [
    (["--latent", "--domain", "hexagon"], "unknown domain 'hexagon'; valid domains: circle, square, triangle"),
    (["--latent", "--input", "missing.png"], "cannot read image missing.png: no such file"),
    (["--latent", "--out", "walk.avi"], r"walk\.avi.*\.gif or \.mp4"),
    (["--latent", "--references", "a.png", "b.png"], "--references IMG IMG ...* or .*--latent"),
    ([], "--references IMG IMG ...* or .*--latent"),
    (["--latent", "--domain", "square", "--domains", "circle,square"], "give one of them"),
    (["--references", "x.png", "y.png", "--psi", "0.5"], "use it with --latent"),
    (["--references", "x.png", "y.png", "--num-styles", "3"], "--num-styles is the number of latent codes"),
])
def test_interpolate_errors_come_before_any_frame(trained, tmp_path, capsys, monkeypatch, flags, message):
    import re

    data, run = trained
    monkeypatch.chdir(tmp_path)
    argv = ["interpolate", str(run), "--input", str(data / "val" / "circle" / "00000.png"),
            "--out", "walk.gif", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


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


# ---- face masks (w_hpf > 0) ------------------------------------------------------------------------

HPF = tiny.as_cli_flags(tiny.V2 + ["model.w_hpf=1", "train.total_iters=1", "train.sample_every=100"])


def test_w_hpf_without_fan_weights_stops_before_the_run_exists(trained, tmp_path, no_face_files, capsys):
    data, _ = trained
    runs = tmp_path / "runs"
    assert main(["train", "--preset", "demo", "--data", str(data), "--runs", str(runs), *HPF]) == 2
    captured = capsys.readouterr()
    assert "run directory" not in captured.out and not runs.exists()
    assert "wing.ckpt not found" in captured.err and "wing.ckpt?dl=1" in captured.err
    assert "--no-masks" in captured.err and str(no_face_files) in captured.err


def test_no_masks_is_printed_and_recorded_then_sampling_follows_the_run(trained, tmp_path, no_face_files,
                                                                        capsys):
    from stargan.config import Config

    data, _ = trained
    run = tmp_path / "run"
    assert main(["train", "--preset", "demo", "--data", str(data), "--run-dir", str(run), "--no-progress",
                 "--no-masks", *HPF]) == 0
    assert "model.masks=false (--no-masks)" in capsys.readouterr().out
    assert Config.load_yaml(run / "config.yaml").model.masks is False
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--num-images", "2"]) == 0
    assert "model.masks=false" in capsys.readouterr().out


def test_fan_weights_option_gives_sampling_its_masks(trained, tmp_path, face_files, capsys, monkeypatch):
    import torch

    from stargan.faces import FAN

    calls = []

    def cheap_masks(self, x):  # the FAN itself is tested in tests/faces; here only who calls it
        calls.append(x.size(0))
        return torch.ones(x.size(0), 1, 256, 256), torch.ones(x.size(0), 1, 256, 256)

    monkeypatch.setattr(FAN, "get_heatmap", cheap_masks)
    data, _ = trained
    run = tmp_path / "run"
    weights = tmp_path / "elsewhere" / "wing.ckpt"
    weights.parent.mkdir()
    (face_files / "wing.ckpt").rename(weights)
    assert main(["train", "--preset", "demo", "--data", str(data), "--run-dir", str(run), "--no-progress",
                 "--fan-weights", str(weights), *HPF]) == 0
    assert "masks=false" not in capsys.readouterr().out
    assert len(calls) == 3 + 3 + 4      # one iteration, the watch (one batch per target domain), the grids
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--num-images", "2"]) == 0  # recorded path
    assert calls[10:] == [2] * 4
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--num-images", "2",
                 "--fan-weights", str(tmp_path / "nowhere.ckpt")]) == 2
    assert "nowhere.ckpt, does not exist" in capsys.readouterr().err


# ---- data fashion-mnist, StarGAN v1, classifier, import-official -----------------------------------

# log_every=10 (the preset's): the resumed run logs only the last step of each part
V1_TINY = tiny.as_cli_flags(tiny.V1 + ["train.total_iters=4", "train.log_every=10"])


@pytest.fixture(scope="module")
def trained_v1(demo_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli_v1") / "runs"
    assert main(["train", "--model", "v1", "--data", str(demo_data), "--runs", str(runs), "--no-progress",
                 *V1_TINY]) == 0
    return demo_data, runs / "00000-cpu-v1"


def test_data_fashion_mnist(tmp_path, capsys):
    import gzip
    import struct

    import numpy as np

    def idx(array):
        header = struct.pack(">I", 0x800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        return gzip.compress(header + array.tobytes())

    source = tmp_path / "idx"
    source.mkdir()
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    for prefix, labels in (("train", [5, 7, 5, 1, 7]), ("t10k", [7, 5, 5, 7, 0])):
        (source / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx(images))
        (source / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx(np.array(labels, dtype=np.uint8)))
    out = tmp_path / "fmnist"
    assert main(["data", "fashion-mnist", "--source", str(source), "--out", str(out), "--classes",
                 "sneaker,sandal", "--no-progress"]) == 0
    assert capsys.readouterr().out == (f"wrote {out}/train and {out}/val; train with: stargan train --preset "
                                       f"fmnist_shoes --data {out}\n")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["train/sandal/00000.png", "train/sandal/00001.png", "train/sneaker/00000.png",
                       "train/sneaker/00001.png", "val/sandal/00000.png", "val/sandal/00001.png",
                       "val/sneaker/00000.png", "val/sneaker/00001.png"]
    with Image.open(out / "train" / "sneaker" / "00001.png") as png:   # train image 4, padded by 2
        assert png.size == (32, 32) and png.mode == "RGB"
        assert np.array_equal(np.asarray(png)[2:30, 2:30, 1], images[4])

    assert main(["data", "fashion-mnist", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "x"),
                 "--classes", "sneaker,boots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --classes needs at least two different Fashion-MNIST classes")
    assert "unknown: ['boots']" in err and err.count("\n") == 1


def test_data_font_styles(tmp_path, capsys):
    from stargan.data.font_styles import STYLES, find_font

    try:
        find_font("sans"), find_font("serif")
    except ValueError as err:
        pytest.skip(str(err))
    out = tmp_path / "fonts"
    assert main(["data", "font-styles", "--styles", "sans,serif", "--out", str(out), "--train-per-domain", "2",
                 "--val-per-domain", "1", "--img-size", "16", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}/train and {out}/val (fonts and licences: "
                                              f"{out}/README.txt); train with: stargan train --preset cpu-style")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["train/sans/00000.png", "train/sans/00001.png", "train/serif/00000.png",
                       "train/serif/00001.png", "val/sans/00000.png", "val/serif/00000.png"]
    with Image.open(out / "val" / "serif" / "00000.png") as png:
        assert png.size == (16, 16) and png.mode == "RGB"
    assert STYLES["serif"].package in (out / "README.txt").read_text()

    assert main(["data", "font-styles", "--styles", "sans,gothic", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: --styles needs at least two different font styles")


def test_data_icon_themes(tmp_path, capsys):
    from tests.data.test_icon_themes import make_themes

    icons, out = make_themes(tmp_path / "icons"), tmp_path / "icon-themes"
    assert main(["data", "icon-themes", "--icons-dir", str(icons), "--themes", "tango,elementary", "--out",
                 str(out), "--train-per-domain", "2", "--val-per-domain", "1", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}/train and {out}/val (themes and licences: "
                                              f"{out}/README.txt); train with: stargan train --preset cpu-style")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["train/elementary/00000.png", "train/elementary/00001.png", "train/tango/00000.png",
                       "train/tango/00001.png", "val/elementary/00000.png", "val/tango/00000.png"]
    assert main(["data", "icon-themes", "--icons-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: no icons of the Tango theme ('tango') under")


def test_train_v1_writes_a_v1_run(trained_v1, capsys):
    _, run = trained_v1
    saved = yaml_of(run / "config.yaml")
    assert saved["arch"] == "v1" and saved["preset"] == "cpu-v1"
    assert saved["model"]["c_dim"] == 3 and saved["model"]["img_size"] == 16
    assert saved["data"]["domains"] == ["circle", "square", "triangle"]
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"step-000002", "step-000004"}
    assert (run / "checkpoints" / "step-000004" / "networks.safetensors").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000002_folders.png", "000004_folders.png"]


def test_resume_v1_continues_to_the_new_total(trained_v1, capsys):
    _, run = trained_v1
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "train.total_iters=6"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {run / 'checkpoints' / 'step-000004'} at step 4" in out
    assert f"checkpoint:   {run / 'checkpoints' / 'step-000006'}" in out
    assert (run / "samples" / "000006_folders.png").is_file()
    steps = [json.loads(line)["step"] for line in (run / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert steps == [4, 6]                                               # log_every=10: only the last steps
    assert yaml_of(run / "config.yaml")["train"]["total_iters"] == 6


def test_sample_v1(trained_v1, tmp_path, capsys):
    _, run = trained_v1
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--num-images", "3"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 's' / 'folders.png'}\n"
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["folders.png"]


def test_v1_with_a_v2_preset_is_a_one_line_error(trained_v1, tmp_path, capsys):
    data, _ = trained_v1
    assert main(["train", "--model", "v1", "--preset", "cpu", "--data", str(data), "--runs",
                 str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == ("error: --model v1 does not match --preset cpu, a StarGAN v2 preset; "
                                       "StarGAN v1 presets: both256, celeba128, cpu-v1, rafd128\n")
    assert not (tmp_path / "runs").exists()



@pytest.mark.parametrize("flags", [["--precision", "bf16"], ["--set", "train.compile=true"]])
def test_v1_with_a_v2_only_setting_is_a_one_line_error_before_any_file(trained_v1, tmp_path, capsys, flags):
    data, _ = trained_v1
    assert main(["train", "--model", "v1", "--data", str(data), "--runs", str(tmp_path / "runs"), *flags]) == 2
    err = capsys.readouterr().err
    key = "precision" if "--precision" in flags else "compile"
    assert err.startswith(f"error: --set.train: unknown key '{key}' in V1TrainConfig (a StarGAN v2 setting")
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()

def test_presets_lists_both_architectures(capsys):
    assert main(["presets"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows["cpu"] == "StarGAN v2" and rows["fmnist_shoes"] == "StarGAN v2"
    assert rows["cpu-v1"] == "StarGAN v1" and rows["celeba128"] == "StarGAN v1"
    assert set(rows.values()) == {"StarGAN v1", "StarGAN v2"}


def test_classifier_train(trained_v1, tmp_path, capsys):
    import re

    from stargan.metrics.classifier import ClassifierFeatures

    data, _ = trained_v1
    out = tmp_path / "clf.safetensors"
    assert main(["classifier", "train", str(data), "--out", str(out), "--epochs", "1", "--img-size", "16",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(rf"val accuracy [01]\.\d{{4}} \(train [01]\.\d{{4}}\); wrote {re.escape(str(out))}\n",
                        printed), printed
    clf = ClassifierFeatures.from_file(out)
    assert tuple(clf.domains) == ("circle", "square", "triangle") and clf.img_size == 16


@pytest.fixture
def official_v1(tmp_path):
    """A G/D pair saved as the StarGAN v1 release does: bare state dicts, NNNNNN-G.ckpt / NNNNNN-D.ckpt."""
    import torch

    from stargan.v1 import Discriminator, Generator

    torch.manual_seed(0)
    g, d = tmp_path / "000100-G.ckpt", tmp_path / "000100-D.ckpt"
    torch.save(Generator(conv_dim=8, label_dim=3, repeat_num=1).state_dict(), g)
    torch.save(Discriminator(img_size=16, conv_dim=8, c_dim=3, repeat_num=2).state_dict(), d)
    return g, d


def test_import_official_v1_then_sample(trained_v1, official_v1, tmp_path, capsys):
    data, _ = trained_v1
    g, d = official_v1
    run = tmp_path / "official"
    assert main(["import-official", "--model", "v1", str(g), str(d), "--out", str(run),
                 "--domains", "circle,square,triangle"]) == 0
    assert capsys.readouterr().out == (f"imported {g} -> {run / 'checkpoints' / 'step-000100'}\n"
                                       f"sample with: stargan sample {run} --data DIR\n")
    saved = yaml_of(run / "config.yaml")
    assert saved["arch"] == "v1" and saved["preset"] == "official:000100-G.ckpt"
    assert {k: saved["model"][k] for k in ("img_size", "c_dim", "g_conv_dim", "d_conv_dim", "g_repeat_num",
                                           "d_repeat_num")} == {"img_size": 16, "c_dim": 3, "g_conv_dim": 8,
                                                                "d_conv_dim": 8, "g_repeat_num": 1,
                                                                "d_repeat_num": 2}
    assert saved["data"]["mode"] == "folders"
    assert main(["sample", str(run), "--data", str(data), "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 's' / 'folders.png'}\n"
    with Image.open(tmp_path / "s" / "folders.png") as grid:   # 6 val inputs x (input + 3 domains)
        assert grid.size == (4 * 16 + 5 * GRID_PADDING, 6 * 16 + 7 * GRID_PADDING)


def test_import_official_v1_without_domain_names_samples_any_folders(trained_v1, official_v1, tmp_path):
    data, _ = trained_v1
    g, d = official_v1
    assert main(["import-official", "--model", "v1", str(g), str(d), "--out", str(tmp_path / "run")]) == 0
    assert main(["sample", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "s")]) == 0


def test_import_official_two_files_need_model_v1(official_v1, tmp_path, capsys):
    g, d = official_v1
    assert main(["import-official", str(g), str(d), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == ("error: a StarGAN v2 import takes one *_nets_ema.ckpt file, got 2; "
                                       "two files (G.ckpt D.ckpt) are a StarGAN v1 import: add --model v1\n")
    assert not (tmp_path / "run").exists()


def yaml_of(path):
    import yaml

    return yaml.safe_load(path.read_text())


# ---- input checks: sample --data domains, unreadable translate inputs ----------------------------

def renamed_domain_copy(data, out):
    """A copy of ``data`` whose ``triangle`` domain is called ``star``."""
    shutil.copytree(data, out)
    for split in ("train", "val"):
        (out / split / "triangle").rename(out / split / "star")
    return out


@pytest.mark.parametrize("fixture", ["trained", "trained_v1"])
def test_sample_data_must_have_the_runs_domains(fixture, request, tmp_path, capsys):
    data, run = request.getfixturevalue(fixture)
    other = renamed_domain_copy(data, tmp_path / "other")
    assert main(["sample", str(run), "--data", str(other), "--out", str(tmp_path / "s"),
                 "--num-images", "3"]) == 2
    err = capsys.readouterr().err
    assert "['circle', 'square', 'triangle']" in err and "'star'" in err and str(other) in err
    assert "Traceback" not in err and not (tmp_path / "s").exists()


def test_translate_skips_unreadable_inputs_and_names_them(trained, tmp_path, capsys):
    data, run = trained
    inputs = tmp_path / "in"
    shutil.copytree(data / "val" / "circle", inputs)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    (inputs / "empty.jpg").write_bytes(b"")
    assert main(["translate", str(run), "--input", str(inputs), "--domain", "square", "--num-styles", "1",
                 "--out", str(tmp_path / "t")]) == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["00000_square_style0.png",
                                                                  "00001_square_style0.png"]
    assert f"skipped: cannot read image {inputs / 'broken.png'}: not a readable image" in captured.err
    assert f"{inputs / 'empty.jpg'}" in captured.err
    assert "error: 2 of the 4 images" in captured.err and "Traceback" not in captured.err
    assert main(["translate", str(run), "--input", str(inputs / "empty.jpg"), "--domain", "square",
                 "--out", str(tmp_path / "u")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read image {inputs / 'empty.jpg'}")
