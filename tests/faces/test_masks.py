"""Which masks a model uses: none for w_hpf = 0, FAN masks for w_hpf > 0 (weights found by argument,
config, the run's own file or the weights folder), or none by explicit opt-out, which is announced."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stargan.config import ModelConfig
from stargan.faces.masks import find_mask_weights, load_mask_fn, opt_out_note, run_fan_file
from stargan.faces.weights import save_fan_state
from stargan.metrics.weights import WeightsError
from tests.release_fixtures import random_fan

HPF = ModelConfig(w_hpf=1.0)
PLAIN = ModelConfig(w_hpf=0.0)


def test_no_masks_without_w_hpf_or_when_opted_out(no_face_files):
    assert load_mask_fn(PLAIN) is None and opt_out_note(PLAIN) is None
    off = replace(HPF, masks=False)
    assert load_mask_fn(off) is None
    assert "model.masks=false" in opt_out_note(off) and "not the paper's" in opt_out_note(off)
    assert opt_out_note(HPF) is None


def test_w_hpf_without_weights_stops_with_the_release_link(no_face_files):
    with pytest.raises(WeightsError, match="wing.ckpt not found") as info:
        load_mask_fn(HPF)
    assert "wing.ckpt?dl=1" in str(info.value) and str(no_face_files) in str(info.value)


def test_weights_folder_gives_the_fan_masks(face_files):
    mask_fn = load_mask_fn(HPF)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    expected = random_fan().get_heatmap(x)
    for got, want in zip(mask_fn(x), expected):
        torch.testing.assert_close(got, want)


def test_precedence_argument_then_config_then_run_then_folder(face_files, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000010").mkdir(parents=True)
    assert run_fan_file(run) is None
    assert find_mask_weights(HPF, run=run) == face_files / "wing.ckpt"
    save_fan_state(random_fan(1).state_dict(), run / "fan.safetensors")
    assert run_fan_file(run / "checkpoints" / "step-000010") == run / "fan.safetensors"
    assert find_mask_weights(HPF, run=run) == run / "fan.safetensors"
    configured = tmp_path / "configured.ckpt"
    torch.save({"state_dict": random_fan(2).state_dict()}, configured)
    assert find_mask_weights(replace(HPF, fan_weights=str(configured)), run=run) == configured
    argument = tmp_path / "argument.ckpt"
    torch.save({"state_dict": random_fan(3).state_dict()}, argument)
    assert find_mask_weights(replace(HPF, fan_weights=str(configured)), argument, run) == argument
    with pytest.raises(WeightsError, match="the path you passed"):
        find_mask_weights(replace(HPF, fan_weights=str(tmp_path / "gone.ckpt")))
