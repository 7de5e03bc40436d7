"""Typed config: presets with the paper's values, ``key=value`` overrides, round trips, errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import stargan
from stargan.config import (Config, ConfigError, DataConfig, ModelConfig, OptimConfig, V1Config, available_presets,
                            config_from_dict, flat_settings, load_config_yaml, load_preset, V2_ONLY_TRAIN)
from stargan.config_rules import RULES
from stargan.nets.v2 import build_networks

PAPER_OPTIM = {"lr": 1e-4, "mapping_lr": 1e-6, "beta1": 0.0, "beta2": 0.99, "weight_decay": 1e-4}


def test_available_presets_include_the_shipped_ones():
    assert {"celeba_hq", "afhq", "cpu", "demo"} <= set(available_presets())


def test_cpu_small_generator_reaches_8x8_and_the_paper_presets_16x16():
    """At 32 px the paper's 16x16 bottleneck keeps the source's outline (a sneaker never becomes a
    sandal); 4x4 lets G ignore its input (README, "Training on few images / on a CPU")."""
    for name, size in (("cpu-small", 8), ("cpu-style", 8), ("cpu", 16), ("afhq", 16)):
        model = load_preset(name).model
        features, _ = build_networks(model, with_discriminator=False).generator.encode_image(
            torch.zeros(1, 3, model.img_size, model.img_size))
        assert features.shape[-1] == size, name


def test_cpu_style_is_cpu_small_with_the_style_settings_and_no_other_change():
    """The preset's comment and the README say what cpu-style changes; nothing else may differ."""
    small, style = flat_settings(load_preset("cpu-small")), flat_settings(load_preset("cpu-style"))
    changed = {key: style[key] for key in small if small[key] != style[key]}
    assert changed == {"model.base_dim": 16, "model.max_conv_dim": 64,
                       "model.g_out_norm": False, "model.g_skips": True, "model.g_skip_full": False,
                       "loss.lambda_id": 1.0, "loss.lambda_reg": 0.1, "loss.lambda_ds": 0.0, "loss.ds_iter": 12000,
                       "optim.lr": 6.0e-4, "optim.mapping_lr": 6.0e-5, "train.total_iters": 12000,
                       "preset": "cpu-style"}


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


# ---- validation: every field has a rule, one error lists every bad value ---------------------------



def _sections(config_cls):
    return [f.default_factory() for f in dataclasses.fields(config_cls) if f.default_factory is not dataclasses.MISSING]


@pytest.mark.parametrize("config_cls", [Config, V1Config])
def test_every_field_of_every_section_has_a_rule_and_the_defaults_pass(config_cls):
    for section in _sections(config_cls):
        names = {f.name for f in dataclasses.fields(section)}
        assert names == set(RULES[type(section).__name__]), type(section).__name__
        for name in names:
            assert RULES[type(section).__name__][name](getattr(section, name)) is None, name


def test_every_preset_is_valid_and_survives_a_round_trip_through_config_yaml(tmp_path):
    """Each shipped preset loads (a bad value raises ConfigError) and the resolved config a run saves
    reads back as the same config, every value in the YAML file being one the preset set or a default."""
    import yaml

    names = available_presets()
    assert {"demo", "cpu-small", "afhq", "celeba_hq", "cpu-v1"} <= set(names)
    for name in names:
        config = load_preset(name)
        config.save_yaml(tmp_path / f"{name}.yaml")
        assert load_config_yaml(tmp_path / f"{name}.yaml") == config, name
        written = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        shipped = yaml.safe_load((Path(stargan.__file__).parent / "presets" / f"{name}.yaml").read_text())
        for section, values in shipped.items():
            if isinstance(values, dict):
                assert set(values) <= set(written[section]), (name, section)


@pytest.mark.parametrize("override, expected", [
    ("train.sample_every=0", "train.sample_every=0: expected >= 1"),
    ("train.log_every=0", "train.log_every=0: expected >= 1"),
    ("train.save_every=-5", "train.save_every=-5: expected >= 1"),
    ("train.total_iters=-3", "train.total_iters=-3: expected >= 1"),
    ("train.device=gpu", "train.device='gpu': expected auto, cpu, mps, cuda or cuda:N"),
    ("train.keep_last=-1", "train.keep_last=-1: expected >= 0"),
    ("optim.ema_beta=2", "optim.ema_beta=2.0: expected in [0, 1)"),
    ("optim.ema_beta=1", "optim.ema_beta=1.0: expected in [0, 1)"),
    ("optim.lr=0", "optim.lr=0.0: expected > 0"),
    ("optim.beta2=1.5", "optim.beta2=1.5: expected in [0, 1)"),
    ("loss.lambda_ds=-1", "loss.lambda_ds=-1.0: expected >= 0"),
    ("model.img_size=48", "model.img_size=48: expected a power of two in [16, 1024]"),
    ("model.img_size=8", "model.img_size=8: expected a power of two in [16, 1024]"),
    ("model.num_domains=0", "model.num_domains=0: expected >= 1"),
    ("data.batch_size=0", "data.batch_size=0: expected >= 1"),
    ("data.crop_prob=1.5", "data.crop_prob=1.5: expected in [0, 1]"),
    ("data.domains=[cat,cat]", "data.domains=('cat', 'cat'): expected distinct non-empty names"),
    ("eval.mode=sideways", "eval.mode='sideways': expected one of latent, reference, both"),
    ("eval.every=-1", "eval.every=-1: expected >= 0"),
    ("optim.lr=.nan", "optim.lr=nan: expected > 0"),
    ("init.sha256=abc", "init.sha256='abc': expected empty or 64 lowercase hex digits"),
    ("init.new=[lion]", "init.new=('lion',): expected NAME=mean, NAME=half:DOMAIN or NAME=copy:DOMAIN items"),
    ("init.discriminator=old", "init.discriminator='old': expected empty or one of parent, fresh"),
])
def test_a_bad_value_is_named_with_its_allowed_range(override, expected):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides([override])
    assert expected in str(err.value)


def test_one_error_lists_every_bad_field():
    with pytest.raises(ConfigError) as err:
        Config().with_overrides(["train.sample_every=0", "optim.ema_beta=2", "train.total_iters=-3",
                                 "loss.lambda_ds=-1", "model.img_size=48"])
    message = str(err.value)
    for name in ("train.sample_every=0", "optim.ema_beta=2.0", "train.total_iters=-3",
                 "loss.lambda_ds=-1.0", "model.img_size=48"):
        assert name in message


def test_v1_sections_are_checked_too():
    with pytest.raises(ConfigError) as err:
        V1Config().with_overrides(["optim.n_critic=0", "data.mode=rafd", "train.log_every=0",
                                   "loss.lambda_gp=-10"])
    for name in ("optim.n_critic=0", "data.mode='rafd'", "train.log_every=0", "loss.lambda_gp=-10.0"):
        assert name in str(err.value)


def test_sections_built_directly_and_loaded_configs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="optim.ema_beta=1.5"):
        OptimConfig(ema_beta=1.5)
    with pytest.raises(ConfigError, match="train.sample_every=0"):
        config_from_dict({"train": {"sample_every": 0}})


def test_fan_weights_may_move_on_resume_but_masks_are_part_of_the_run():
    from stargan.config import fixed_on_resume

    assert not fixed_on_resume("model.fan_weights")
    assert fixed_on_resume("model.masks") and fixed_on_resume("model.w_hpf")
    assert fixed_on_resume("init.path") and fixed_on_resume("init.kept")  # where a run started from


@pytest.mark.parametrize("key,value", [("precision", "bf16"), ("precision", "fp32"), ("channels_last", "true"),
                                       ("compile", "auto"), ("shared_passes", "false"), ("psi", "0.7"),
                                       ("augment", "ada"), ("ada_target", "0.5"), ("ada_kimg", "10"),
                                       ("ada_interval", "2")])
def test_v1_refuses_every_v2_only_training_setting_naming_it(key, value):
    assert set(V2_ONLY_TRAIN) == {"precision", "channels_last", "compile", "shared_passes", "psi", "augment",
                                  "ada_target", "ada_kimg", "ada_interval"}
    with pytest.raises(ValueError, match=rf"unknown key '{key}' in V1TrainConfig \(a StarGAN v2 setting"):
        load_preset("cpu-v1").with_overrides([f"train.{key}={value}"])
    assert getattr(load_preset("cpu").with_overrides([f"train.{key}={value}"]).train, key) is not None  # v2: fine


def test_a_v1_config_yaml_of_an_earlier_release_still_loads_but_a_used_v2_setting_is_refused(tmp_path):
    """Earlier releases wrote every v2 training setting, unused, into v1 runs' config.yaml: with the values
    they always held, such a file loads (resume keeps working); a value that was set is refused."""
    old = V1Config().to_dict()
    old["train"].update(V2_ONLY_TRAIN)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    config = load_config_yaml(path)
    assert config == V1Config() and set(config.to_dict()["train"]).isdisjoint(V2_ONLY_TRAIN)
    old["train"]["precision"] = "bf16"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ValueError, match="unknown key 'precision' in V1TrainConfig"):
        load_config_yaml(path)
