"""The watch for a generator that ignores its input: the measure, when it warns, and what it says."""
from __future__ import annotations

import math

import pytest
import torch

from stargan.config import Config, ModelConfig
from stargan.nets.v2 import build_networks
from stargan.training.v2.watch import THRESHOLD, InputWatch, batch_source_kept, warning_text, watch_from

SAMPLE_STEPS = list(range(500, 4001, 500))


def warnings_of(values: list[float], from_step: int = 1000) -> list[int]:
    watch = InputWatch(from_step=from_step)
    return [step for step, value in zip(SAMPLE_STEPS, values) if watch.observe(step, value)]


def test_a_value_that_stays_low_warns_once_at_the_stated_point():
    assert warnings_of([0.02] * 8) == [1000]
    assert warnings_of([0.02] * 8, from_step=2500) == [2500]


def test_a_healthy_run_never_warns():
    assert warnings_of([0.6, 0.55, 0.62, 0.58, 0.7, 0.66, 0.64, 0.67]) == []
    assert warnings_of([THRESHOLD] * 8) == []                         # the threshold itself is not low


def test_one_low_value_is_not_enough_and_early_lows_may_recover():
    assert warnings_of([0.02, 0.3, 0.05, 0.4, 0.05, 0.5, 0.05, 0.6]) == []   # never twice in a row
    assert warnings_of([0.01, 0.02, 0.3, 0.5, 0.6, 0.6, 0.6, 0.6], from_step=1500) == []
    assert warnings_of([0.5, 0.5, 0.5, 0.5, 0.5, 0.05, 0.04, 0.03]) == [3500]  # collapsed late


def test_non_finite_values_are_left_to_the_loss_check():
    assert warnings_of([math.nan] * 8) == []
    assert warnings_of([0.02, math.nan, 0.02, 0.02, 0.5, 0.5, 0.5, 0.5]) == [1500]   # NaN skipped


def test_the_stated_point_is_1000_iterations_or_a_quarter_of_a_shorter_run():
    assert watch_from(4000) == watch_from(100_000) == 1000
    assert watch_from(1500) == 375 and watch_from(8) == 2


def test_the_warning_names_what_to_try_with_the_current_values():
    config = Config().with_overrides(["model.img_size=32", "model.w_hpf=0", "model.g_downsamples=2",
                                      "model.style_dim=32", "loss.lambda_cyc=1.5", "loss.lambda_sty=1", "loss.lambda_ds=2"])
    text = warning_text(0.031, 1000, 500, 0.2, config, bottleneck_downsamples=2)
    assert text.startswith("warning: the generator ignores its input: val/source_kept has been below 0.2 "
                           "since iteration 500 (0.031 at 1000;")
    assert "--set model.style_dim=8 (now 32:" in text
    assert "--set model.g_downsamples=1 (G now goes down to 8x8; 16x16 keeps more of the source)" in text
    assert "loss.lambda_sty (now 1) and loss.lambda_ds (now 2)" in text
    assert "a stronger cycle loss (loss.lambda_cyc, now 1.5) does not help" in text
    assert ("for domains that differ in rendering, not in shape (the same pictures in other styles), the preset "
            "cpu-style, or U-Net skips and an identity loss in a new run, --set model.g_skips=true "
            "--set loss.lambda_id=1 (now 0). See README" in text)
    assert "\n" not in text
    skips = warning_text(0.031, 1000, 500, 0.2, config.with_overrides(["model.g_skips=true"]), 2)
    assert "cpu-style" not in skips and skips.endswith("does not help while the style can carry the picture. "
                                                         "See README: Training on few images / on a CPU")
    paper = warning_text(0.031, 1000, 500, 0.2, config, bottleneck_downsamples=1)
    assert "g_downsamples" not in paper and "model.style_dim=8" in paper       # 0 would mean the paper's
    tiny = warning_text(0.031, 1000, 500, 0.2, config.with_overrides(["model.style_dim=1"]), 2)
    assert "style_dim" not in tiny


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return build_networks(ModelConfig(img_size=16, num_domains=3, latent_dim=4, style_dim=8, hidden_dim=16,
                                      max_conv_dim=16, base_dim=8, w_hpf=0))


def test_batch_source_kept_is_1_for_a_copy_and_0_for_a_style_only_generator(nets):
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    nets.generator.encode_image = lambda x, masks=None: (x, {})
    nets.generator.decode_from = lambda features, s, masks=None: features[0] + s.mean()
    assert batch_source_kept(nets, x, y, seed=0) == pytest.approx(1.0)
    nets.generator.decode_from = lambda features, s, masks=None: torch.zeros_like(features[0]) + s[:, :1, None, None]
    assert batch_source_kept(nets, x, y, seed=0) == 0.0


def test_batch_source_kept_repeats_its_draws_and_leaves_the_global_rng_alone(nets):
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    state = torch.get_rng_state()
    first = batch_source_kept(nets, x, y, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert batch_source_kept(nets, x, y, seed=3) == first and 0 < first < 10
    assert all(net.training for _, net in nets.items())                   # modes restored
    assert batch_source_kept(nets, x[:1], y[:1], seed=3) is None            # no two images to compare
