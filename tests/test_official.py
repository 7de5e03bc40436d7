"""Importing checkpoints in the official StarGAN v2 format into a run directory.

Official files are ``torch.save``d dicts of state dicts. The importer reads the architecture off the
tensor shapes assuming the paper's first width (2**14 // img_size), so the networks here are
paper-like (base_dim 0) at 256 px, but narrow: widths 64 throughout, small style / latent / hidden sizes.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from stargan.checkpoints import CheckpointError, checkpoint_dirs, load_for_sampling
from stargan.config import Config, ModelConfig
from stargan.nets.v2 import build_networks
from stargan.official import import_official, infer_model_config

NARROW_HPF = ModelConfig(img_size=256, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=32,
                         max_conv_dim=64, base_dim=0, w_hpf=1.0)
NARROW_AFHQ = replace(NARROW_HPF, num_domains=3, w_hpf=0.0)


def _official_dicts(nets, with_discriminator=False, prefix=""):
    out = {}
    for name, net in nets.items():
        if name == "discriminator" and not with_discriminator:
            continue
        sd = {f"{prefix}{k}": v.clone() for k, v in net.state_dict().items()}
        sd.pop(f"{prefix}hpf.filter", None)   # released generators lack the high-pass buffer
        out[name] = sd
    return out


@pytest.fixture(scope="module")
def celeba_file(tmp_path_factory):
    """A narrow CelebA-HQ-like (w_hpf 1, 2 domains) network file without discriminator."""
    torch.manual_seed(0)
    nets = build_networks(NARROW_HPF, with_discriminator=False)
    _perturb(nets)
    root = tmp_path_factory.mktemp("celeba")
    path = root / "100000_nets_ema.ckpt"
    raw = _official_dicts(nets)
    assert "hpf.filter" not in raw["generator"]
    torch.save(raw, path)
    return nets, path


@pytest.fixture(scope="module")
def celeba_like(celeba_file):
    """... and its import."""
    nets, path = celeba_file
    ckpt = import_official(path, path.parent / "run")
    return nets, path, path.parent / "run", ckpt


def _perturb(nets):
    with torch.no_grad():  # non-zero biases and non-identity norms, so a dropped tensor would show
        for _, net in nets.items():
            for name, p in net.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))


def _sample_inputs(cfg: ModelConfig, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, cfg.img_size, cfg.img_size, generator=g) * 2 - 1
    z = torch.randn(2, cfg.latent_dim, generator=g)
    return x, z


def _assert_same_outputs(original, loaded, cfg: ModelConfig):
    x, z = _sample_inputs(cfg)
    y = torch.tensor([cfg.num_domains - 1])
    with torch.no_grad():
        for net in (*[n for _, n in original.items()], *[n for _, n in loaded.items()]):
            net.eval()
        s_ref = original.style_encoder(x, y)
        torch.testing.assert_close(loaded.style_encoder(x, y), s_ref)
        s_lat = original.mapping_network(z, torch.tensor([0, cfg.num_domains - 1]))
        torch.testing.assert_close(loaded.mapping_network(z, torch.tensor([0, cfg.num_domains - 1])), s_lat)
        torch.testing.assert_close(loaded.generator(x, s_ref), original.generator(x, s_ref))


def test_infer_model_config_reads_the_architecture_off_the_shapes():
    for cfg in (NARROW_HPF, NARROW_AFHQ):
        nets = build_networks(cfg, with_discriminator=False)
        assert infer_model_config(_official_dicts(nets)) == cfg


def test_import_writes_a_run_directory_that_samples_like_the_original(celeba_like):
    nets, path, run, ckpt = celeba_like
    assert ckpt == run / "checkpoints" / "step-100000"   # the step comes from the file name
    assert checkpoint_dirs(run) == [ckpt]
    assert Config.load_yaml(run / "config.yaml").model == NARROW_HPF

    config, loaded = load_for_sampling(run)
    assert config.model == NARROW_HPF
    assert config.data.domains == ("female", "male")      # CelebA-HQ folder order by default
    assert config.preset == "official:100000_nets_ema.ckpt"
    assert loaded.discriminator is None
    # the high-pass buffer is rebuilt from w_hpf
    torch.testing.assert_close(loaded.generator.hpf.filter, nets.generator.hpf.filter)
    _assert_same_outputs(nets, loaded, NARROW_HPF)


def test_imported_networks_serve_as_current_and_ema_weights(celeba_like):
    nets, _, _, ckpt = celeba_like
    tensors = load_file(str(ckpt / "networks.safetensors"))
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            torch.testing.assert_close(tensors[f"{name}.{key}"], value)
            torch.testing.assert_close(tensors[f"ema.{name}.{key}"], value)
    assert not any(k.startswith("discriminator.") for k in tensors)


def test_import_with_discriminator_module_prefix_and_custom_domains(tmp_path):
    torch.manual_seed(3)
    nets = build_networks(NARROW_AFHQ)
    _perturb(nets)
    path = tmp_path / "050000_nets.ckpt"
    torch.save(_official_dicts(nets, with_discriminator=True, prefix="module."), path)
    ckpt = import_official(path, tmp_path / "run", domains=("a", "b", "c"))
    assert ckpt.name == "step-050000"
    config, loaded = load_for_sampling(tmp_path / "run")
    assert config.model == NARROW_AFHQ and config.data.domains == ("a", "b", "c")
    _assert_same_outputs(nets, loaded, NARROW_AFHQ)
    tensors = load_file(str(ckpt / "networks.safetensors"))
    for key, value in nets.discriminator.state_dict().items():
        torch.testing.assert_close(tensors[f"discriminator.{key}"], value)


def test_default_domain_names_for_three_domains_are_afhq(tmp_path):
    torch.manual_seed(4)
    nets = build_networks(NARROW_AFHQ, with_discriminator=False)
    path = tmp_path / "nets_ema.ckpt"
    torch.save(_official_dicts(nets), path)
    ckpt = import_official(path, tmp_path / "run")
    assert ckpt.name == "step-000000"   # no step in the file name
    config, _ = load_for_sampling(ckpt)
    assert config.data.domains == ("cat", "dog", "wild")


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        import_official(tmp_path / "nope.ckpt", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_file_without_a_generator_is_rejected(tmp_path):
    nets = build_networks(NARROW_HPF, with_discriminator=False)
    raw = _official_dicts(nets)
    del raw["generator"]
    path = tmp_path / "100000_nets_ema.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="generator"):
        import_official(path, tmp_path / "run")
    torch.save([1, 2, 3], path)  # not even a dict
    with pytest.raises(CheckpointError, match="not an official"):
        import_official(path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wrong_number_of_domain_names_is_rejected(tmp_path):
    nets = build_networks(NARROW_HPF, with_discriminator=False)
    path = tmp_path / "100000_nets_ema.ckpt"
    torch.save(_official_dicts(nets), path)
    with pytest.raises(ValueError, match="3 domain names"):
        import_official(path, tmp_path / "run", domains=("a", "b", "c"))
    assert not (tmp_path / "run").exists()


def test_mismatched_tensor_is_a_checkpoint_error(tmp_path):
    nets = build_networks(NARROW_HPF, with_discriminator=False)
    raw = _official_dicts(nets)
    raw["style_encoder"]["unshared.1.weight"] = torch.zeros(3, 3)
    path = tmp_path / "x.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="style_encoder"):
        import_official(path, tmp_path / "run")


def test_optimizer_file_is_rejected_with_a_checkpoint_error(tmp_path):
    nets = build_networks(NARROW_HPF)
    raw = {}
    for name, net in nets.items():   # what Adam(...).state_dict() holds after one step
        params = list(net.parameters())
        raw[name] = {
            "state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                          "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(params)},
            "param_groups": [{"lr": 1e-4, "betas": (0.0, 0.99), "eps": 1e-8, "weight_decay": 1e-4,
                              "amsgrad": False, "params": list(range(len(params)))}],
        }
    path = tmp_path / "100000_optims.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="optim"):
        import_official(path, tmp_path / "run")


def test_cli_import_then_translate(celeba_file, tmp_path, capsys):
    from PIL import Image

    from stargan.cli import main

    _, path = celeba_file
    assert main(["import-official", str(path), "--out", str(tmp_path / "run"),
                 "--domains", "female,male"]) == 0
    assert "step-100000" in capsys.readouterr().out
    Image.new("RGB", (40, 30), (200, 120, 90)).save(tmp_path / "face.jpg")
    assert main(["translate", str(tmp_path / "run"), "--input", str(tmp_path / "face.jpg"),
                 "--domain", "male", "--num-styles", "1", "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "face_male_style0.png") as image:
        assert image.size == (256, 256)
