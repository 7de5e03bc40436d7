"""Differentiable augmentation for D (DiffAugment, ADA) and the EMA warm-up."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from torch import nn

from stargan.config import OptimConfig, load_preset
from stargan.training.v2 import augment as A
from stargan.training.v2.step import ema_beta_at, train_step

from .reference_step import d_loss, reference_step
from .test_step import LOSS, SHARED, UNSHARED, _assert_same_state, make_batch, make_state

SIMPLE = [A.brightness, A.saturation, A.contrast, A.translation, A.cutout, A.xflip, A.diff_augment]


def seeded(fn, seed: int = 0):
    """``fn`` with the same random draws at every call (gradcheck calls it many times)."""
    def call(x):
        torch.manual_seed(seed)
        return fn(x)
    return call


@pytest.mark.parametrize("fn", SIMPLE, ids=lambda f: f.__name__)
def test_every_transform_is_differentiable_to_second_order(fn):
    """R1 differentiates D(T(x)) w.r.t. x and then back-propagates that gradient: T needs both orders."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(seeded(fn), (x,))
    assert torch.autograd.gradgradcheck(seeded(fn), (x,))


def test_same_random_state_gives_the_same_transform_and_a_new_one_differs():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(seeded(A.diff_augment, 3)(x), seeded(A.diff_augment, 3)(x))
    assert not torch.equal(seeded(A.diff_augment, 3)(x), seeded(A.diff_augment, 4)(x))


def test_translation_is_an_integer_shift_of_at_most_an_eighth_with_zero_fill():
    x = torch.rand(16, 3, 16, 16) + 1  # no zeros in the image: zeros in the output are the fill
    out = seeded(A.translation)(x)
    found = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy, dx in itertools.product(range(-2, 3), repeat=2)
                   if torch.equal(out[i], _shift(x[i], dy, dx))]
        assert len(matches) == 1, i  # exactly one shift within 16 / 8 = 2 pixels explains the output
        found.add(matches[0])
    assert len(found) > 3  # shifts differ between samples


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[:, h, w] = x[:, h + dy, w + dx], zero outside (a naive loop)."""
    out = torch.zeros_like(x)
    for h in range(x.shape[1]):
        for w in range(x.shape[2]):
            if 0 <= h + dy < x.shape[1] and 0 <= w + dx < x.shape[2]:
                out[:, h, w] = x[:, h + dy, w + dx]
    return out


def test_cutout_zeroes_one_square_of_half_the_side_and_keeps_the_rest():
    x = torch.rand(32, 3, 16, 16) + 1
    out = seeded(A.cutout)(x)
    for i in range(len(x)):
        hole = (out[i] == 0).all(0)
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole])
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # an 8 x 8 square, clipped at the border
        assert hole.sum() == len(rows) * len(cols)           # one full rectangle
        assert len(rows) == rows[-1] - rows[0] + 1 and len(cols) == cols[-1] - cols[0] + 1


def test_colour_transforms_keep_what_they_should():
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    shift = seeded(A.brightness)(x) - x            # one offset per image, within +-0.5
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift))
    assert shift.abs().max() <= 0.5 and shift[:, 0, 0, 0].std() > 0
    sat = seeded(A.saturation)(x)                  # the gray value of each pixel stays
    assert torch.allclose(sat.mean(1), x.mean(1))
    con = seeded(A.contrast)(x)                    # the mean of each image stays
    assert torch.allclose(con.mean((1, 2, 3)), x.mean((1, 2, 3)))
    assert not torch.allclose(sat, x) and not torch.allclose(con, x)


def test_ada_at_p_0_is_the_identity_and_at_p_1_transforms_every_image():
    x = torch.rand(8, 3, 16, 16) + 1
    assert torch.equal(A.AdaptiveAugment(p=0.0)(x), x)
    out = A.AdaptiveAugment(p=1.0)(x)
    assert all(not torch.equal(o, i) for o, i in zip(out, x))
    # p = 0.1: each of the 6 transforms on about a tenth of the images; about 0.9^6 = 53% untouched
    torch.manual_seed(0)
    many = x.repeat(32, 1, 1, 1)
    changed = torch.tensor([not torch.equal(o, i) for o, i in zip(A.AdaptiveAugment(p=0.1)(many), many)])
    assert 0.3 < 1 - changed.float().mean() < 0.75


class ToyD(nn.Module):
    """Real logits of a chosen sign: a D that has memorised the reals (+) or is fooled (-)."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x):
        return self.sign * (1 + x.abs().mean((1, 2, 3)))


@pytest.mark.parametrize("sign, direction", [(+1.0, +1), (-1.0, -1)])
def test_ada_p_moves_by_the_rule_towards_less_overfitting(sign, direction):
    """E[sign(D(real))] = +1 > 0.6: D overfits, so p rises; -1 < 0.6: p falls. Each move is
    sign * batch * interval / (kimg * 1000), made every ``interval`` iterations."""
    ada = A.AdaptiveAugment(target=0.6, kimg=1.0, interval=4, batch_size=8, p=0.5)
    D = ToyD(sign)
    history = []
    for it in range(12):
        ada.observe(D(ada(torch.rand(8, 3, 16, 16))))
        ada.after_step()
        history.append(round(ada.p.item(), 6))
    step = 8 * 4 / 1000
    expected = [0.5 + direction * step * ((it + 1) // 4) for it in range(12)]
    assert history == pytest.approx(expected)
    assert ada.logs()["D/ada_p"].item() == pytest.approx(expected[-1])


def test_ada_p_stays_within_0_and_1():
    up, down = A.AdaptiveAugment(kimg=0.001, interval=1, p=0.9), A.AdaptiveAugment(kimg=0.001, interval=1)
    for _ in range(3):
        up.observe(torch.ones(8))
        up.after_step()
        down.observe(-torch.ones(8))
        down.after_step()
    assert up.p.item() == 1.0 and down.p.item() == 0.0


def test_augmentation_state_round_trips_and_continues_the_same_draws():
    x = torch.rand(4, 3, 16, 16)
    for make in (lambda: A.AdaptiveAugment(kimg=1.0, interval=4, p=0.25, seed=3), lambda: A.DiffAugment(3)):
        aug = make()
        aug(x)
        aug.observe(torch.tensor([1.0, -2.0, 3.0]))
        aug.after_step()
        other = type(aug)(seed=99)
        other.load_state_dict(aug.state_dict())
        assert other.state_dict().keys() == aug.state_dict().keys()
        for key, value in aug.state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key
        torch.manual_seed(0)              # the global generator plays no part
        first = aug(x)
        torch.manual_seed(1)
        assert torch.equal(other(x), first)


def test_make_augment_and_its_errors():
    assert A.make_augment("none") is None
    assert type(A.make_augment("diffaugment")) is A.DiffAugment
    assert isinstance(A.make_augment("ada", 0.6, 10.0, 4, 8), A.AdaptiveAugment)
    with pytest.raises(ValueError, match="train.augment='flip'"):
        A.make_augment("flip")


def test_r1_is_taken_with_respect_to_the_real_images_before_augmentation():
    """loss_reg = 0.5 * E|grad_x D(T(x))|^2, the gradient going through T (here, with the same draws)."""
    state = make_state(dtype=torch.float64)
    b = make_batch(dtype=torch.float64)
    _, terms = d_loss(state.nets, LOSS, b, "latent", augment=A.DiffAugment(seed=7))
    x = b["x_real"].clone().requires_grad_(True)
    out = state.nets.discriminator(A.diff_augment(x, torch.Generator().manual_seed(7)), b["y_org"])
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert terms["reg"].item() == pytest.approx(0.5 * grad.pow(2).sum((1, 2, 3)).mean().item(), rel=1e-12)
    # ... and differs from the penalty on the images as they are
    _, plain = d_loss(state.nets, LOSS, b, "latent")
    assert terms["reg"].item() != pytest.approx(plain["reg"].item(), rel=1e-3)


@pytest.mark.parametrize("mode", ["diffaugment", "ada"])
def test_the_step_augments_exactly_like_the_reference(mode):
    """Every image D sees is augmented, in the same order, by the step (with and without shared passes)
    and by the paper-form reference: the same transforms and the same networks (float64) after two
    iterations; and augmentation did change the result."""
    f64 = torch.float64
    states = {}
    for name, speed, aug in (("reference", None, mode), ("unshared", UNSHARED, mode), ("shared", SHARED, mode),
                             ("none", SHARED, "none")):
        state = make_state(dtype=f64)
        state.augment = A.make_augment(aug, kimg=0.01, interval=1, batch_size=4)
        if isinstance(state.augment, A.AdaptiveAugment):
            state.augment.p = torch.tensor(0.5)
        torch.manual_seed(11)
        for it in range(2):
            batch = make_batch(seed=it, dtype=f64)
            if speed is None:
                reference_step(state, batch, LOSS, ema_beta=0.9)
            else:
                train_step(state, batch, LOSS, ema_beta=0.9, speed=speed)
        states[name] = state
    for name in ("unshared", "shared"):
        _assert_same_state(states[name], states["reference"])
        if mode == "ada":
            assert torch.equal(states[name].augment.p, states["reference"].augment.p)
    d = lambda s: torch.cat([p.flatten() for p in s.nets.discriminator.parameters()])  # noqa: E731
    assert not torch.allclose(d(states["shared"]), d(states["none"]))


def test_ema_warmup_ramp():
    paper = OptimConfig()
    warm = replace(paper, ema_warmup=True)
    assert [ema_beta_at(t, paper) for t in (0, 10, 10**6)] == [0.999] * 3
    assert ema_beta_at(0, warm) == pytest.approx(0.1)
    assert ema_beta_at(90, warm) == pytest.approx(0.91)
    assert ema_beta_at(8989, warm) < 0.999 and ema_beta_at(8990, warm) == 0.999
    assert ema_beta_at(10**6, replace(warm, ema_beta=0.99)) == 0.99


def test_with_the_warmup_the_average_forgets_its_initialisation_quickly():
    """After 100 iterations the initial weights' share is 9! 100! / 109! (~1e-13), not 0.999^100 = 90%."""
    share = 1.0
    for t in range(100):
        share *= ema_beta_at(t, replace(OptimConfig(), ema_warmup=True))
    assert share < 1e-12


def test_paper_presets_keep_the_paper_math_and_cpu_presets_warm_up():
    for name in ("afhq", "celeba_hq"):
        cfg = load_preset(name)
        assert (cfg.optim.ema_warmup, cfg.train.augment) == (False, "none"), name
    for name in ("cpu", "cpu-small", "demo", "fmnist_shoes"):
        assert load_preset(name).optim.ema_warmup, name
