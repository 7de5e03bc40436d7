"""Checkpoint format, atomic writes, pruning and the errors users see."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from stargan import checkpoints
from stargan.checkpoints import CheckpointError, load_for_sampling, resolve_checkpoint, save_checkpoint
from stargan.config import Config, V1Config
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state, make_v1_train_state
from tests import tiny

CONFIG = Config().with_overrides(tiny.V2_MODEL + ["model.num_domains=2", "data.domains=a,b"])


def make_state(step: int = 0):
    torch.manual_seed(0)
    state = make_train_state(build_networks(CONFIG.model), CONFIG.optim)
    state.step = step
    return state


def test_format_is_safetensors_plus_weights_only_state(tmp_path):
    ckpt = save_checkpoint(tmp_path, make_state(7), CONFIG)
    assert ckpt == tmp_path / "checkpoints" / "step-000007"
    tensors = load_file(str(ckpt / "networks.safetensors"))
    prefixes = {k.split(".")[0] if not k.startswith("ema.") else "ema." + k.split(".")[1] for k in tensors}
    assert prefixes == {"generator", "mapping_network", "style_encoder", "discriminator",
                        "ema.generator", "ema.mapping_network", "ema.style_encoder"}
    meta = torch.load(ckpt / "state.pt", weights_only=True)
    assert meta["step"] == 7 and meta["format"] == checkpoints.FORMAT
    assert Config.from_dict(meta["config"]) == CONFIG
    assert set(meta["optimizers"]) == {"generator", "mapping_network", "style_encoder", "discriminator"}
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_keep_last_prunes_oldest(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, make_state(step), CONFIG, keep_last=2)
    assert [p.name for p in checkpoints.checkpoint_dirs(tmp_path)] == ["step-000003", "step-000004"]
    assert resolve_checkpoint(tmp_path).name == "step-000004"


def test_failed_write_keeps_existing_checkpoints(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, make_state(1), CONFIG)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, make_state(2), CONFIG, keep_last=1)
    assert [p.name for p in checkpoints.checkpoint_dirs(tmp_path)] == ["step-000001"]
    assert resolve_checkpoint(tmp_path).name == "step-000001"


def test_restore_round_trip_and_rng(tmp_path):
    state = make_state(3)
    for p in state.nets.generator.parameters():
        p.data.add_(1.0)
    torch.manual_seed(99)
    expected_draw = torch.rand(3)
    torch.manual_seed(99)
    save_checkpoint(tmp_path, state, CONFIG)
    torch.manual_seed(5)
    fresh = make_state(0)
    checkpoints.restore_train_state(tmp_path, fresh, CONFIG)
    assert fresh.step == 3
    for a, b in zip(state.nets.generator.parameters(), fresh.nets.generator.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_draw)  # global torch RNG restored


def test_load_for_sampling_uses_ema(tmp_path):
    state = make_state(1)
    for p in state.ema.generator.parameters():
        p.data.fill_(0.5)
    save_checkpoint(tmp_path, state, CONFIG)
    config, nets = load_for_sampling(tmp_path)
    assert config.data.domains == ("a", "b") and nets.discriminator is None
    assert all(torch.all(p == 0.5) for p in nets.generator.parameters())
    assert not nets.generator.training


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        resolve_checkpoint(tmp_path)
    ckpt = save_checkpoint(tmp_path, make_state(1), CONFIG)
    (ckpt / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_for_sampling(ckpt)
    torch.save({"format": "something-else"}, ckpt / "state.pt")
    with pytest.raises(CheckpointError, match="not a stargan checkpoint"):
        load_for_sampling(ckpt)


# ---------------------------------------------------------------- StarGAN v1

V1_CONFIG = V1Config().with_overrides(tiny.V1_MODEL + ["data.domains=a,b,c"])


def make_v1_state(step: int = 0):
    torch.manual_seed(0)
    state = make_v1_train_state(build_v1_networks(V1_CONFIG.model), V1_CONFIG.optim)
    state.step = step
    return state


def test_v1_format_round_trip_and_sampling(tmp_path):
    state = make_v1_state(5)
    ckpt = save_checkpoint(tmp_path, state, V1_CONFIG)
    tensors = load_file(str(ckpt / "networks.safetensors"))
    assert {k.split(".")[0] for k in tensors} == {"generator", "discriminator"}
    meta = torch.load(ckpt / "state.pt", weights_only=True)
    assert meta["format"] == checkpoints.V1_FORMAT == "stargan-v1-checkpoint/1"
    assert meta["config"]["arch"] == "v1" and set(meta["optimizers"]) == {"generator", "discriminator"}
    assert checkpoints.load_config(tmp_path) == V1_CONFIG and checkpoints.load_config(ckpt).arch == "v1"
    config, generator = checkpoints.load_v1_for_sampling(tmp_path)
    assert config == V1_CONFIG and not generator.training
    for key, value in state.nets.generator.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key
    with torch.no_grad():
        state.nets.generator.main[0].weight.add_(1.0)
    fresh = make_v1_state(0)
    checkpoints.restore_train_state(tmp_path, fresh, V1_CONFIG)
    assert fresh.step == 5
    assert not torch.equal(fresh.nets.generator.main[0].weight, state.nets.generator.main[0].weight)
    assert torch.equal(fresh.nets.generator.main[0].weight, generator.main[0].weight)


def test_v1_and_v2_checkpoints_are_not_mixed_up(tmp_path):
    save_checkpoint(tmp_path / "v1", make_v1_state(1), V1_CONFIG)
    save_checkpoint(tmp_path / "v2", make_state(1), CONFIG)
    assert checkpoints.load_config(tmp_path / "v2") == CONFIG
    with pytest.raises(CheckpointError, match="v1 checkpoint, not v2; load it with .*load_v1_for_sampling"):
        load_for_sampling(tmp_path / "v1")
    with pytest.raises(CheckpointError, match="StarGAN v2 checkpoint, not v1"):
        checkpoints.load_v1_for_sampling(tmp_path / "v2")
    with pytest.raises(CheckpointError, match="StarGAN v2 checkpoint but this run is v1"):
        checkpoints.restore_train_state(tmp_path / "v2", make_v1_state(), V1_CONFIG)
    with pytest.raises(TypeError, match="v1 config needs a V1TrainState"):
        save_checkpoint(tmp_path / "x", make_state(1), V1_CONFIG)


# ---- damaged and hostile files: one line naming the file and what is wrong, no code run -------------

class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint's code was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _damage(kind: str, ckpt, tmp_path):
    state, nets = ckpt / "state.pt", ckpt / "networks.safetensors"
    if kind == "truncated safetensors":
        nets.write_bytes(nets.read_bytes()[: nets.stat().st_size // 2])
    elif kind == "corrupted safetensors header":
        data = bytearray(nets.read_bytes())
        data[8:40] = b"\xff" * 32
        nets.write_bytes(bytes(data))
    elif kind == "truncated state":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    elif kind == "random bytes state":
        state.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                        dtype=torch.uint8).numpy().tobytes())
    elif kind == "another program's file":
        from PIL import Image
        Image.new("RGB", (4, 4)).save(state, format="PNG")
    elif kind == "another program's torch file":
        torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, state)
    elif kind == "state without optimizers":
        meta = torch.load(state, weights_only=True)
        del meta["optimizers"]
        torch.save(meta, state)
    elif kind == "pickle payload":
        torch.save({"format": checkpoints.FORMAT, "payload": _Payload(tmp_path / "pwned")}, state)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind, expected", [
    ("truncated safetensors", "networks.safetensors: not a readable safetensors file"),
    ("corrupted safetensors header", "networks.safetensors: not a readable safetensors file"),
    ("truncated state", "state.pt: not a readable stargan state file"),
    ("random bytes state", "state.pt: not a readable stargan state file"),
    ("another program's file", "state.pt: not a readable stargan state file"),
    ("another program's torch file", "is not a stargan checkpoint"),
    ("state without optimizers", "lacks 'optimizers'"),
    ("pickle payload", "state.pt: not a readable stargan state file"),
])
@pytest.mark.parametrize("reader", ["sample", "resume", "config"])
def test_damaged_or_hostile_checkpoints_give_one_line_naming_the_file(tmp_path, kind, expected, reader):
    ckpt = save_checkpoint(tmp_path, make_state(3), CONFIG)
    _damage(kind, ckpt, tmp_path)
    if reader == "config" and "safetensors" in kind:  # the config is read without opening the networks
        assert checkpoints.load_config(tmp_path) == CONFIG
        return
    with pytest.raises(CheckpointError) as err:
        if reader == "sample":
            load_for_sampling(tmp_path)
        elif reader == "resume":
            checkpoints.restore_train_state(tmp_path, make_state(), CONFIG)
        else:
            checkpoints.load_config(tmp_path)
    message = str(err.value)
    assert expected in message and str(ckpt) in message and "\n" not in message
    assert not (tmp_path / "pwned").exists()  # the payload never ran


def test_a_directory_without_a_checkpoint_is_named(tmp_path):
    (tmp_path / "checkpoints" / "step-000004").mkdir(parents=True)  # a write that never finished
    with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path}"):
        load_for_sampling(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_for_sampling(tmp_path / "missing")
