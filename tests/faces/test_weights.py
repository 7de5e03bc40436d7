"""The release's face files: found by path, folder or the weights folder; read without pickled code;
cached once as safetensors; a missing or wrong file stops with what, where from and where to put it."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from stargan.faces import weights
from stargan.faces.fan import FAN
from stargan.faces.weights import (find_fan_weights, load_fan, load_mean_landmarks, read_fan_state)
from stargan.metrics.weights import WeightsError


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch.hub folder; returns its checkpoints folder (created)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    fan = FAN()
    with torch.no_grad():
        for tensor in fan.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    return fan.state_dict()


def write_wing(path, state, extra: bool = True):
    """A file in the release's format: {'state_dict': ...}, with a key FAN does not have."""
    sd = dict(state)
    if extra:
        sd["l1.weight"] = torch.zeros(2)
    torch.save({"state_dict": sd}, path)
    return path


def test_missing_fan_weights_say_what_where_from_and_where_to_put_them(hub):
    with pytest.raises(WeightsError) as info:
        load_fan()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "wing.ckpt" in message and f"it is not in {hub}" in message
    assert "https://www.dropbox.com/s/tjxpypwpt38926e/wing.ckpt?dl=1" in message
    assert "`stargan download wing`" in message
    assert "--fan-weights" in message and "model.fan_weights" in message and "--no-masks" in message


def test_an_explicit_path_that_does_not_exist_is_named(hub, tmp_path):
    with pytest.raises(WeightsError, match="the path you passed, .*nowhere.ckpt, does not exist"):
        find_fan_weights(tmp_path / "nowhere.ckpt")


def test_release_file_loads_caches_safetensors_once_and_then_needs_no_pickle(hub, state, monkeypatch):
    write_wing(hub / "wing.ckpt", state)
    fan = load_fan()
    for key, value in fan.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert (hub / "wing.safetensors").is_file()
    assert find_fan_weights() == hub / "wing.safetensors"

    def no_pickle(*args, **kwargs):
        raise AssertionError("read the pickle again")

    monkeypatch.setattr(torch, "load", no_pickle)
    again = load_fan()
    torch.testing.assert_close(again.l0.weight, state["l0.weight"], rtol=0, atol=0)
    (hub / "wing.ckpt").unlink()               # the cache alone is enough
    assert find_fan_weights() == hub / "wing.safetensors"


def test_a_newer_release_file_replaces_a_stale_cache(hub, state):
    write_wing(hub / "wing.ckpt", state)
    load_fan()
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    write_wing(hub / "wing.ckpt", changed)
    later = os.stat(hub / "wing.safetensors").st_mtime + 10
    os.utime(hub / "wing.ckpt", (later, later))
    assert find_fan_weights() == hub / "wing.ckpt"
    torch.testing.assert_close(load_fan().l0.bias, changed["l0.bias"], rtol=0, atol=0)
    os.utime(hub / "wing.ckpt", (later - 20, later - 20))
    torch.testing.assert_close(load_fan().l0.bias, changed["l0.bias"], rtol=0, atol=0)


def test_explicit_file_or_folder(hub, state, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    write_wing(folder / "wing.ckpt", state, extra=False)
    assert find_fan_weights(folder) == folder / "wing.ckpt"
    load_fan(folder / "wing.ckpt")
    assert (folder / "wing.safetensors").is_file() and not (hub / "wing.safetensors").exists()


def test_wrong_files_are_refused_with_the_file_named(hub, state, tmp_path):
    partial = {k: v for k, v in state.items() if not k.startswith("l0.")}
    write_wing(tmp_path / "partial.ckpt", partial)
    with pytest.raises(WeightsError, match="partial.ckpt does not hold the released FAN.*l0.weight"):
        read_fan_state(tmp_path / "partial.ckpt")
    with open(tmp_path / "code.ckpt", "wb") as f:   # a pickle that would run code is not loaded
        pickle.dump({"state_dict": {"x": os.getcwd}}, f, protocol=2)
    with pytest.raises(WeightsError, match="cannot read .*code.ckpt as FAN weights"):
        read_fan_state(tmp_path / "code.ckpt")


def test_read_only_folder_still_loads(hub, state, monkeypatch):
    write_wing(hub / "wing.ckpt", state)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(weights, "save_file", refuse)
    load_fan()
    assert not (hub / "wing.safetensors").exists()
    assert not list(hub.glob(".*tmp"))


def test_mean_landmarks(hub, tmp_path):
    with pytest.raises(WeightsError) as info:
        load_mean_landmarks()
    assert "celeba_lm_mean.npz" in str(info.value)
    assert "https://www.dropbox.com/s/91fth49gyb7xksk/celeba_lm_mean.npz?dl=1" in str(info.value)
    mean = np.random.default_rng(0).uniform(0, 256, (98, 2)).astype(np.float32)
    np.savez(hub / "celeba_lm_mean.npz", mean=mean)
    np.testing.assert_allclose(load_mean_landmarks(), mean)
    np.savez(tmp_path / "bad.npz", mean=mean[:5])
    with pytest.raises(WeightsError, match=r"bad.npz: 'mean' has shape \(5, 2\)"):
        load_mean_landmarks(tmp_path / "bad.npz")
