"""Importing checkpoints in the official StarGAN v2 and v1 formats into a run directory.

StarGAN v2's official files are ``torch.save``d dicts of state dicts. The importer reads the
architecture off the tensor shapes assuming the paper's first width (2**14 // img_size), so the
networks here are paper-like (base_dim 0) at 256 px, but narrow: widths 64 throughout, small
style / latent / hidden sizes.
StarGAN v1's are bare G and D state dicts (``200000-G.ckpt``, ``200000-D.ckpt``); narrow ones here too.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stargan.checkpoints import (
    CheckpointError,
    checkpoint_dirs,
    load_config,
    load_for_sampling,
    load_v1_for_sampling,
    restore_train_state,
)
from stargan.config import Config, ModelConfig, V1Config, V1ModelConfig
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import build_networks
from stargan.official import (
    RAFD_DOMAINS,
    import_official,
    import_v1_official,
    infer_model_config,
    infer_v1_model_config,
)
from stargan.state import make_v1_train_state
from tests.reference_keys import read_key_file
from tests.release_fixtures import random_fan

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
    """A narrow CelebA-HQ-like (w_hpf 1, 2 domains) network file without discriminator, with the FAN
    under ``fan`` as the release saves it."""
    torch.manual_seed(0)
    nets = build_networks(NARROW_HPF, with_discriminator=False)
    _perturb(nets)
    root = tmp_path_factory.mktemp("celeba")
    path = root / "100000_nets_ema.ckpt"
    raw = _official_dicts(nets)
    assert "hpf.filter" not in raw["generator"]
    raw["fan"] = random_fan(seed=3).state_dict()
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


def test_the_release_fan_entry_is_kept_with_the_run(celeba_like):
    _, _, run, _ = celeba_like
    kept = load_file(str(run / "fan.safetensors"))
    expected = random_fan(seed=3).state_dict()
    assert sorted(kept) == sorted(expected)   # safetensors stores keys sorted
    for key, value in expected.items():
        torch.testing.assert_close(kept[key], value, rtol=0, atol=0)


def test_cli_import_then_translate_with_the_release_fan(celeba_file, no_face_files, tmp_path, capsys):
    """No wing.ckpt anywhere: the imported run's own FAN gives the masks."""
    from PIL import Image

    from stargan.cli import main
    from stargan.data.folders import load_rgb
    from stargan.data.transforms import eval_transform

    nets, path = celeba_file
    assert main(["import-official", str(path), "--out", str(tmp_path / "run"),
                 "--domains", "female,male"]) == 0
    out = capsys.readouterr().out
    assert "step-100000" in out and "FAN weights (its 'fan' entry) are kept" in out
    Image.new("RGB", (40, 30), (200, 120, 90)).save(tmp_path / "face.jpg")
    assert main(["translate", str(tmp_path / "run"), "--input", str(tmp_path / "face.jpg"),
                 "--domain", "male", "--num-styles", "1", "--seed", "0", "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "face_male_style0.png") as image:
        assert image.size == (256, 256)
        translated = torch.from_numpy(np.array(image)).reshape(-1, 3).float()
    # The same translation by hand: masks from the release's FAN, computed on the source image.
    x = eval_transform(load_rgb(tmp_path / "face.jpg"), NARROW_HPF.img_size)[None]
    fan = random_fan(seed=3)
    z = torch.randn(1, NARROW_HPF.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        nets.generator.eval(), nets.mapping_network.eval()
        s = nets.mapping_network(z, torch.tensor([1]))
        with_masks = nets.generator(x, s, masks=fan.get_heatmap(x))
        without = nets.generator(x, s)
    expected = ((with_masks[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).reshape(-1, 3)
    plain = ((without[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).reshape(-1, 3)
    assert (translated - expected).abs().mean() < 1.0 < (translated - plain).abs().mean()


def test_a_release_file_without_fan_needs_wing_ckpt_or_no_masks(celeba_file, no_face_files, tmp_path, capsys):
    from PIL import Image

    from stargan.cli import main

    nets, _ = celeba_file
    path = tmp_path / "100000_nets_ema.ckpt"
    torch.save(_official_dicts(nets), path)
    assert main(["import-official", str(path), "--out", str(tmp_path / "run")]) == 0
    assert "the file has no 'fan' entry; put wing.ckpt" in capsys.readouterr().out
    Image.new("RGB", (40, 30), (200, 120, 90)).save(tmp_path / "face.jpg")
    translate = ["translate", str(tmp_path / "run"), "--input", str(tmp_path / "face.jpg"),
                 "--domain", "male", "--num-styles", "1", "--out", str(tmp_path / "out")]
    assert main(translate) == 2
    err = capsys.readouterr().err
    assert "wing.ckpt not found" in err and "wing.ckpt?dl=1" in err and str(no_face_files) in err
    assert not (tmp_path / "out").exists()
    assert main(translate + ["--no-masks"]) == 0
    assert "model.masks=false (--no-masks)" in capsys.readouterr().out
    assert (tmp_path / "out" / "face_male_style0.png").is_file()


# ---------------------------------------------------------------- StarGAN v1: bare G and D state dicts

NARROW_V1 = V1ModelConfig(img_size=32, c_dim=5, g_conv_dim=8, d_conv_dim=4, g_repeat_num=2, d_repeat_num=4)
NARROW_V1_BOTH = replace(NARROW_V1, c2_dim=8)


def _v1_files(tmp_path, model: V1ModelConfig, seed: int = 0, step: str = "200000"):
    """The release's files: ``NNNNNN-G.ckpt`` and ``NNNNNN-D.ckpt``, bare state dicts."""
    torch.manual_seed(seed)
    nets = build_v1_networks(model)
    with torch.no_grad():   # non-identity norms and running statistics, so a dropped tensor would show
        for key, value in nets.generator.state_dict().items():
            if value.is_floating_point() and value.dim() == 1:
                value.add_(0.1 * torch.randn_like(value))
    g, d = tmp_path / f"{step}-G.ckpt", tmp_path / f"{step}-D.ckpt"
    torch.save(nets.generator.state_dict(), g)
    torch.save(nets.discriminator.state_dict(), d)
    return nets, g, d


def test_v1_import_of_g_and_d_rebuilds_the_released_run(tmp_path):
    nets, g, d = _v1_files(tmp_path, NARROW_V1)
    ckpt = import_v1_official(g, d, out_dir=tmp_path / "run")
    assert ckpt == tmp_path / "run" / "checkpoints" / "step-200000"
    config = load_config(tmp_path / "run")
    assert isinstance(config, V1Config) and config.model == NARROW_V1   # img_size from D's head kernel
    assert config.data.mode == "celeba" and config.data.attrs == V1Config().data.attrs
    assert config.preset == "official:200000-G.ckpt"
    assert V1Config.load_yaml(tmp_path / "run" / "config.yaml") == config
    tensors = load_file(str(ckpt / "networks.safetensors"))
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(tensors[f"{name}.{key}"], value), f"{name}.{key}"
    _, generator = load_v1_for_sampling(tmp_path / "run")
    x, c = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    with torch.no_grad():
        torch.testing.assert_close(generator(x, c), nets.generator(x, c))
    state = make_v1_train_state(build_v1_networks(NARROW_V1), config.optim)
    with pytest.raises(CheckpointError, match="networks only"):
        restore_train_state(tmp_path / "run", state, config)


def test_v1_import_of_g_alone_assumes_128_pixels(tmp_path):
    nets, g, _ = _v1_files(tmp_path, NARROW_V1)
    ckpt = import_v1_official(g, out_dir=tmp_path / "run")
    config = load_config(ckpt)
    assert config.model == replace(NARROW_V1, img_size=128, d_conv_dim=64, d_repeat_num=6)
    assert not any(k.startswith("discriminator.") for k in load_file(str(ckpt / "networks.safetensors")))


def test_v1_import_of_a_two_dataset_model(tmp_path):
    _, g, d = _v1_files(tmp_path, NARROW_V1_BOTH)
    config = load_config(import_v1_official(g, d, out_dir=tmp_path / "a"))
    assert config.model == NARROW_V1_BOTH   # D's 13 logits vs G's 15 labels; c_dim 5 as released
    assert config.data.mode == "both" and config.data.domains == RAFD_DOMAINS
    names = tuple("abcde") + tuple(f"e{i}" for i in range(8))
    config = load_config(import_v1_official(g, out_dir=tmp_path / "b", c_dim=5, names=names))
    assert config.model == replace(NARROW_V1_BOTH, img_size=128, d_conv_dim=64, d_repeat_num=6)
    assert config.data.attrs == names[:5] and config.data.domains == names[5:]
    with pytest.raises(ValueError, match="3 names"):
        import_v1_official(g, d, out_dir=tmp_path / "c", names=("a", "b", "c"))


def test_v1_import_errors_name_the_problem(tmp_path):
    _, g, d = _v1_files(tmp_path, NARROW_V1)
    with pytest.raises(CheckpointError, match="not found"):
        import_v1_official(tmp_path / "nope-G.ckpt", out_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a discriminator; pass NNNNNN-G.ckpt first"):
        import_v1_official(d, g, out_dir=tmp_path / "run")
    v2_file = tmp_path / "100000_nets_ema.ckpt"
    torch.save(_official_dicts(build_networks(NARROW_HPF, with_discriminator=False)), v2_file)
    with pytest.raises(CheckpointError, match="StarGAN v2 file.*without --model v1"):
        import_v1_official(v2_file, out_dir=tmp_path / "run")
    torch.save([1, 2], tmp_path / "list-G.ckpt")
    with pytest.raises(CheckpointError, match="not a bare state dict"):
        import_v1_official(tmp_path / "list-G.ckpt", out_dir=tmp_path / "run")
    (tmp_path / "other").mkdir()
    _, _, other_d = _v1_files(tmp_path / "other", replace(NARROW_V1, c_dim=4))
    with pytest.raises(CheckpointError, match="same model"):
        import_v1_official(g, other_d, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_v1_infer_reads_the_released_configurations_off_the_key_file():
    def meta(keys):   # the state dict's shapes, without memory
        return {key: torch.empty(shape, device="meta") for key, shape in keys.items()}

    sections = read_key_file("stargan_v1_official_state_dict_keys.tsv").values()
    found = [infer_v1_model_config(meta(s["G"].keys), meta(s["D"].keys)) for s in sections]
    assert found == [V1ModelConfig(), V1ModelConfig(img_size=256, c_dim=5, c2_dim=8)]
