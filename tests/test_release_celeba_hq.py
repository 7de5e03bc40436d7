"""The README's CelebA-HQ release commands, offline: import the released checkpoint (with its FAN), align
photos, translate with latent and reference styles, sample grids and evaluate, on files written in the
release's formats from our own networks (tests/release_fixtures.py)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from stargan.cli import main
from tests.release_fixtures import write_release


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return write_release(tmp_path, tmp_path / "hub" / "checkpoints")


@pytest.mark.slow
def test_readme_release_commands(release, tmp_path, capsys):
    pytest.importorskip("cv2")
    run = "runs/celeba_hq-official"
    assert main(["import-official", "expr/checkpoints/celeba_hq/100000_nets_ema.ckpt", "--out", run]) == 0
    assert "'fan' entry) are kept" in capsys.readouterr().out
    assert main(["align", "photos/", "aligned/", "--size", "256", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "aligned 2 of 3 images" in out and "broken.jpg" in err
    for name in ("wing.ckpt", "wing.safetensors"):            # the run's own FAN is enough from here
        (release["hub"] / name).unlink()
    assert main(["translate", run, "--input", "aligned", "--domain", "female", "--num-styles", "2",
                 "--seed", "0", "--out", "out/female"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "female").iterdir()) == [
        "man_female_style0.png", "man_female_style1.png", "woman_female_style0.png", "woman_female_style1.png"]
    assert main(["translate", run, "--input", "aligned/woman.jpg", "--domain", "male",
                 "--reference", "aligned/man.jpg", "--out", "out/male"]) == 0
    with Image.open(tmp_path / "out" / "male" / "woman_male.png") as image:
        assert image.size == (256, 256)
    assert main(["sample", run, "--data", "data/celeba_hq", "--num-images", "2", "--num-styles", "1"]) == 0
    assert {p.name for p in (tmp_path / run / "samples").iterdir()} == {"cycle.png", "latent.png",
                                                                         "reference.png"}
    assert main(["eval", run, "--data", "data/celeba_hq", "--random-weights", "--backbone", "none", "--mode", "reference",
                 "--max-inputs", "1", "--num-outs", "2", "--no-progress"]) == 0
    saved = json.loads((tmp_path / run / "metrics" / "step-100000.json").read_text())
    assert saved["settings"]["face_masks"] == "fan"
    assert set(saved["reference"]["tasks"]) == {"female->male", "male->female"}
