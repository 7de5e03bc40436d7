"""Typed config: presets with the paper's values, ``key=value`` overrides, round trips, errors."""
from __future__ import annotations

import dataclasses

import pytest

from stargan.config import Config, DataConfig, ModelConfig, available_presets, load_preset

PAPER_OPTIM = {"lr": 1e-4, "mapping_lr": 1e-6, "beta1": 0.0, "beta2": 0.99, "weight_decay": 1e-4}


def test_available_presets_include_the_shipped_ones():
    assert {"celeba_hq", "afhq", "cpu", "demo"} <= set(available_presets())


@pytest.mark.parametrize("name", ["celeba_hq", "afhq", "cpu", "demo"])
def test_every_preset_loads_with_the_paper_optimiser_and_losses(name):
    cfg = load_preset(name)
    assert cfg.preset == name
    # The demo must learn in a few CPU minutes: 5x the paper's learning rates (ratio kept).
    scale = {"lr": 5.0, "mapping_lr": 5.0} if name == "demo" else {}
    for key, value in PAPER_OPTIM.items():
        assert getattr(cfg.optim, key) == pytest.approx(value * scale.get(key, 1.0)), key
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.beta1, float)
    assert (cfg.loss.lambda_reg, cfg.loss.lambda_sty, cfg.loss.lambda_cyc) == (1.0, 1.0, 1.0)
    assert cfg.data.batch_size == 8
    assert cfg.model.img_size & (cfg.model.img_size - 1) == 0 and cfg.model.img_size >= 16


def test_celeba_hq_preset_has_the_paper_values():
    cfg = load_preset("celeba_hq")
    assert cfg.model == ModelConfig(img_size=256, num_domains=2, latent_dim=16, style_dim=64, hidden_dim=512,
                                    max_conv_dim=512, base_dim=0, w_hpf=1.0)
    assert cfg.model.first_dim == 64
    assert cfg.loss.lambda_ds == 1.0 and cfg.loss.ds_iter == 100_000
    assert cfg.train.total_iters == 100_000
    assert cfg.optim.ema_beta == 0.999


def test_afhq_preset_has_the_paper_values():
    cfg = load_preset("afhq")
    assert cfg.model == ModelConfig(img_size=256, num_domains=3, latent_dim=16, style_dim=64, hidden_dim=512,
                                    max_conv_dim=512, base_dim=0, w_hpf=0.0)
    assert cfg.loss.lambda_ds == 2.0 and cfg.loss.ds_iter == 100_000
    assert cfg.train.total_iters == 100_000


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError) as err:
        load_preset("no_such_preset")
    message = str(err.value)
    assert "no_such_preset" in message
    for name in ("afhq", "celeba_hq", "cpu", "demo"):
        assert name in message


def test_first_dim_is_the_paper_width_unless_base_dim_is_set():
    assert ModelConfig(img_size=256).first_dim == 64
    assert ModelConfig(img_size=128).first_dim == 128
    assert ModelConfig(img_size=32, base_dim=16).first_dim == 16


def test_overrides_parse_values_to_the_field_types():
    cfg = Config().with_overrides(["optim.lr=2e-4", "data.domains=a,b", "model.img_size=64",
                                   "model.w_hpf=0", "data.skip_bad_images=true", "train.device=cpu",
                                   "loss.lambda_ds=2"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.domains == ("a", "b")
    assert cfg.model.img_size == 64 and isinstance(cfg.model.img_size, int)
    assert cfg.model.w_hpf == 0.0 and isinstance(cfg.model.w_hpf, float)
    assert cfg.data.skip_bad_images is True
    assert cfg.train.device == "cpu"
    assert cfg.loss.lambda_ds == 2.0 and isinstance(cfg.loss.lambda_ds, float)
    # everything else untouched
    assert cfg.optim.mapping_lr == 1e-6 and cfg.model.num_domains == 2


def test_overrides_accept_yaml_lists_and_later_items_win():
    cfg = Config().with_overrides(["data.domains=[cat, dog, wild]", "optim.lr=1e-3", "optim.lr=3e-3"])
    assert cfg.data.domains == ("cat", "dog", "wild")
    assert cfg.optim.lr == 3e-3


def test_overrides_return_a_new_config_and_leave_the_original_alone():
    base = Config()
    new = base.with_overrides(["optim.lr=2e-4"])
    assert base.optim.lr == 1e-4 and new.optim.lr == 2e-4
    assert new != base


@pytest.mark.parametrize("item, words", [
    ("optim.nope=1", ["nope", "OptimConfig"]),
    ("model.imgsize=32", ["imgsize", "img_size"]),       # lists the valid keys
    ("nosection.lr=1", ["nosection"]),
])
def test_overrides_reject_unknown_keys_and_sections_naming_them(item, words):
    with pytest.raises(ValueError) as err:
        Config().with_overrides([item])
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("item, key", [
    ("model.img_size=abc", "img_size"),
    ("model.img_size=32.5", "img_size"),
    ("model.img_size=true", "img_size"),
    ("optim.lr=fast", "lr"),
    ("data.skip_bad_images=3", "skip_bad_images"),
    ("data.domains=3", "domains"),
])
def test_overrides_reject_wrong_types_naming_the_key(item, key):
    with pytest.raises(ValueError) as err:
        Config().with_overrides([item])
    assert key in str(err.value)


@pytest.mark.parametrize("item", ["optim.lr", "lr=1e-4", "=3"])
def test_malformed_overrides_are_rejected(item):
    with pytest.raises(ValueError, match="section.key=value"):
        Config().with_overrides([item])


def test_overrides_reject_a_non_section_field_used_as_a_section():
    with pytest.raises(ValueError, match="preset"):
        Config().with_overrides(["preset.x=1"])


def test_to_dict_from_dict_round_trip():
    cfg = load_preset("afhq").with_overrides(["data.domains=cat,dog,wild", "optim.lr=3e-4"])
    data = cfg.to_dict()
    assert data["data"]["domains"] == ["cat", "dog", "wild"]   # plain YAML-friendly types
    assert data["preset"] == "afhq"
    back = Config.from_dict(data)
    assert back == cfg
    assert back.data.domains == ("cat", "dog", "wild")


def test_yaml_round_trip(tmp_path):
    cfg = load_preset("celeba_hq").with_overrides(["data.domains=female,male", "data.root=/x/y",
                                                   "train.psi=0.7"])
    path = tmp_path / "config.yaml"
    cfg.save_yaml(path)
    assert Config.load_yaml(path) == cfg


def test_from_dict_fills_missing_sections_with_defaults_and_rejects_unknown_ones():
    cfg = Config.from_dict({"model": {"img_size": 32}})
    assert cfg.model.img_size == 32 and cfg.optim == Config().optim
    with pytest.raises(ValueError, match="bogus"):
        Config.from_dict({"bogus": {}})


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.preset = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        DataConfig().batch_size = 3
