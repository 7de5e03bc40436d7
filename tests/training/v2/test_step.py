"""One StarGAN v2 iteration, checked against a naive re-implementation of the paper's procedure.

The naive reference (reference_step.py) uses plain autograd: zero every gradient, compute the loss,
backward through everything, step only the optimizers of the phase. ``train_step`` skips parameter
gradients it would throw away (``frozen``) and shares passes across phases; the results must be the same.

The comparison runs in float64. In float32 the two agree only to rounding (~1e-7 relative in the
gradients), and Adam's first steps, ``lr * g / sqrt(v)``, turn rounding noise on gradients that are
nearly zero (conv biases followed by instance norms) into differences of up to ``lr``.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stargan.config import LossConfig, ModelConfig, OptimConfig
from stargan.nets.v2 import Networks, build_networks
from stargan.training.v2.speed import Speed, prepare_networks
from stargan.state import make_train_state
from stargan.training.v2.step import train_step, update_ema
from stargan.training.updates import frozen

from .reference_step import d_loss, g_loss, reference_step

UNSHARED = Speed(shared_passes=False)  # every phase computes its own passes
SHARED = Speed(shared_passes=True)     # the default: passes several phases reuse are computed once


def precision_path(shared_passes: bool) -> Speed:
    """The bf16 step (Speed.passes' wrappers, outputs cast back to the weights' dtype) with autocast
    made the identity: in float64 it shows that the precision path adds nothing to the math."""
    speed = Speed(precision="bf16", shared_passes=shared_passes)
    speed.autocast = contextlib.nullcontext
    return speed


SPEEDS = {"unshared": UNSHARED, "shared": SHARED, "unshared-channels-last": Speed(shared_passes=False,
          channels_last=True), "shared-channels-last": Speed(channels_last=True),
          "unshared-precision-path": precision_path(False), "shared-precision-path": precision_path(True)}

MODEL = ModelConfig(img_size=16, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16, max_conv_dim=32,
                    base_dim=8, w_hpf=0)
# Weights other than 1 so that swapped or missing weights show.
LOSS = LossConfig(lambda_reg=1.5, lambda_sty=0.7, lambda_ds=2.0, lambda_cyc=1.3, ds_iter=4)
OPTIM = OptimConfig()  # the paper's: lr 1e-4, mapping_lr 1e-6, betas (0, 0.99), weight decay 1e-4
NET_NAMES = ("generator", "mapping_network", "style_encoder", "discriminator")


def make_state(model: ModelConfig = MODEL, seed: int = 0, optim: OptimConfig = OPTIM,
               dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    nets = build_networks(model).to(dtype)
    with torch.no_grad():  # He init zeroes biases and norms start at identity: perturb so all matter
        for _, net in nets.items():
            for name, p in net.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
    return make_train_state(nets, optim)


def make_batch(model: ModelConfig = MODEL, seed: int = 0, b: int = 4,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = model.img_size

    def img():
        return (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(dtype)

    y_org = torch.tensor([0, 1, 2, 0][:b]) % model.num_domains
    y_trg = torch.tensor([1, 0, 1, 2][:b]) % model.num_domains
    return {"x_real": img(), "y_org": y_org, "x_ref": img(), "x_ref2": img(), "y_trg": y_trg,
            "z_trg": torch.randn(b, model.latent_dim, generator=g).to(dtype),
            "z_trg2": torch.randn(b, model.latent_dim, generator=g).to(dtype)}


def make_masks(model: ModelConfig, seed: int = 5, b: int = 4, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 1, model.img_size, model.img_size, generator=g).to(dtype) for _ in range(2))


@torch.no_grad()
def toy_mask_fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two soft masks that depend on the image (so masks of x_real and of x_fake differ), at 2x its size
    like the landmark network's 256 px masks are larger than the generator's feature maps."""
    m = F.interpolate(x.mean(1, keepdim=True), scale_factor=2, mode="bilinear", align_corners=False)
    return torch.sigmoid(3 * m), torch.sigmoid(1 - 2 * m)


def _unused(name: str, net: nn.Module, key: str) -> bool:
    return (name == "generator" and net.decode[0].w_hpf > 0 and key.startswith("decode.")
            and key.endswith("conv1x1.weight"))


def _assert_same_state(a, b, atol=1e-9):
    for name in NET_NAMES:
        for (k, x), (_, y) in zip(getattr(a.nets, name).state_dict().items(),
                                  getattr(b.nets, name).state_dict().items()):
            torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=f"{name}.{k}")
    for name, _ in a.ema.items():
        for (k, x), (_, y) in zip(getattr(a.ema, name).state_dict().items(),
                                  getattr(b.ema, name).state_dict().items()):
            torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=f"ema.{name}.{k}")
    for name in NET_NAMES:
        sa, sb = a.optimizers[name].state_dict()["state"], b.optimizers[name].state_dict()["state"]
        # every parameter that received a gradient has Adam state (with w_hpf > 0 the decoder's
        # conv1x1 shortcuts exist, as in the released models, but are unused)
        unused = {i for i, (k, _) in enumerate(getattr(a.nets, name).named_parameters())
                  if _unused(name, getattr(a.nets, name), k)}
        assert sa.keys() == sb.keys(), name
        assert set(sa) == set(range(len(list(getattr(a.nets, name).parameters())))) - unused, name
        for i in sa:
            assert float(sa[i]["step"]) == float(sb[i]["step"])
            # with beta1 = 0, exp_avg is the last gradient: compare it relative to its own scale
            ga, gb = sa[i]["exp_avg"], sb[i]["exp_avg"]
            scale = gb.abs().max().item() + 1e-12
            torch.testing.assert_close(ga / scale, gb / scale, rtol=0, atol=1e-9, msg=f"{name} exp_avg {i}")
            va, vb = sa[i]["exp_avg_sq"].sqrt(), sb[i]["exp_avg_sq"].sqrt()
            scale = vb.abs().max().item() + 1e-12
            torch.testing.assert_close(va / scale, vb / scale, rtol=0, atol=1e-9,
                                       msg=f"{name} exp_avg_sq {i}")
    assert a.step == b.step


@pytest.mark.parametrize("speed", SPEEDS.values(), ids=SPEEDS.keys())
@pytest.mark.parametrize("model, with_masks", [
    (MODEL, False),
    (replace(MODEL, img_size=32, w_hpf=1.0, num_domains=3), True),
], ids=["plain", "hpf-masks"])
def test_train_step_equals_naive_reference(model, with_masks, speed):
    f64 = torch.float64
    state = make_state(model, dtype=f64)
    ref = copy.deepcopy(state)   # nets, EMA and optimizers, with the optimizers pointing at the copies
    prepare_networks(state.nets, speed)  # channels_last: the weights keep their values
    mask_fn = toy_mask_fn if with_masks else None
    for it in range(2):          # two iterations: the second one uses Adam moments and a decayed lambda_ds
        batch = make_batch(model, seed=it, dtype=f64)
        logs = train_step(state, batch, LOSS, ema_beta=0.9, mask_fn=mask_fn, speed=speed)
        ref_logs = reference_step(ref, batch, LOSS, ema_beta=0.9, mask_fn=mask_fn)
        assert logs.keys() == ref_logs.keys()
        for key, value in ref_logs.items():
            torch.testing.assert_close(logs[key], value, rtol=1e-12, atol=1e-12, msg=key)
        assert logs["G/lambda_ds"].item() == pytest.approx(LOSS.lambda_ds * (1 - it / LOSS.ds_iter))
    _assert_same_state(state, ref)
    # the check has teeth: the networks did move, and the EMA lags behind them
    fresh = make_state(model, dtype=f64)
    for name in NET_NAMES:
        net = getattr(state.nets, name)
        moved = [not torch.equal(p, q) for (k, p), q in zip(net.named_parameters(),
                                                           getattr(fresh.nets, name).parameters())
                 if not _unused(name, net, k)]
        assert all(moved), name
    g_now = torch.cat([p.flatten() for p in state.nets.generator.parameters()])
    g_ema = torch.cat([p.flatten() for p in state.ema.generator.parameters()])
    assert not torch.allclose(g_now, g_ema)


def fan_mask_fn(seed: int = 0):
    """Masks from a random FAN (the released layout) through the released heatmap-to-mask steps, in
    float64. The network runs at 64 px instead of 256 to keep float64 affordable; its last layer is
    shifted so that, like trained heatmaps, only peaks pass the 0.1 threshold (masks then depend on the
    image instead of saturating at 1)."""
    from stargan.faces.heatmaps import masks_from_heatmaps
    from tests.release_fixtures import random_fan

    fan = random_fan(seed)
    probe = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        heatmaps = fan(probe)[:, :98].transpose(0, 1).flatten(1)
        fan.l0.bias[:98] -= torch.quantile(heatmaps, 0.995, dim=1) - 0.1
    fan = fan.double()

    computed: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}  # a pure function: compute once per input

    @torch.no_grad()
    def mask_fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = x.cpu().numpy().tobytes()
        if key not in computed:
            small = F.interpolate(x, size=64, mode="bilinear", align_corners=False)
            computed[key] = masks_from_heatmaps(fan(small * 0.5 + 0.5)[:, :98])
        return computed[key]

    return mask_fn


@pytest.mark.slow
def test_train_step_with_fan_masks_equals_naive_reference():
    model = replace(MODEL, img_size=32, w_hpf=1.0)
    f64 = torch.float64
    state = make_state(model, dtype=f64)
    ref = copy.deepcopy(state)
    mask_fn = fan_mask_fn()
    batch = make_batch(model, b=2, dtype=f64)
    masks = mask_fn(batch["x_real"])
    assert 0.01 < masks[0].mean() < 0.9 and 0 < masks[1].mean() < masks[0].mean()  # not empty, not saturated
    with torch.no_grad():   # the masks matter: G's output changes with them
        s = state.nets.mapping_network(batch["z_trg"], batch["y_trg"])
        G = state.nets.generator
        assert (G(batch["x_real"], s, masks=masks) - G(batch["x_real"], s)).abs().mean() > 1e-3
    train_step(state, batch, LOSS, ema_beta=0.9, mask_fn=mask_fn)
    reference_step(ref, batch, LOSS, ema_beta=0.9, mask_fn=mask_fn)
    _assert_same_state(state, ref)


@pytest.mark.parametrize("speed", [SHARED, UNSHARED], ids=["shared", "unshared"])
@pytest.mark.parametrize("model, with_masks", [
    (MODEL, False),
    (replace(MODEL, img_size=32, w_hpf=1.0, num_domains=3), True),
], ids=["plain", "hpf-masks"])
def test_train_step_with_the_identity_loss_equals_naive_reference(model, with_masks, speed):
    """loss.lambda_id (not in the paper): both G phases add |G(x, s_own) - x|, and the step stays exact."""
    f64, loss = torch.float64, replace(LOSS, lambda_id=0.6)
    state = make_state(model, dtype=f64)
    ref, plain = copy.deepcopy(state), copy.deepcopy(state)
    mask_fn = toy_mask_fn if with_masks else None
    for it in range(2):
        batch = make_batch(model, seed=it, dtype=f64)
        logs = train_step(state, batch, loss, ema_beta=0.9, mask_fn=mask_fn, speed=speed)
        ref_logs = reference_step(ref, batch, loss, ema_beta=0.9, mask_fn=mask_fn)
        plain_logs = train_step(plain, batch, LOSS, ema_beta=0.9, mask_fn=mask_fn, speed=speed)
        assert logs.keys() == ref_logs.keys() == plain_logs.keys() | {"G/latent_id", "G/ref_id"}
        for key, value in ref_logs.items():
            torch.testing.assert_close(logs[key], value, rtol=1e-12, atol=1e-12, msg=key)
        assert logs["G/latent_id"] > 0 and logs["G/ref_id"] > 0
    _assert_same_state(state, ref)
    with pytest.raises(AssertionError):     # the term moves the networks
        _assert_same_state(state, plain)


@pytest.mark.parametrize("speed", [SHARED, UNSHARED], ids=["shared", "unshared"])
@pytest.mark.parametrize("model, with_masks", [
    (MODEL, False),
    (replace(MODEL, img_size=32, w_hpf=1.0, num_domains=3), True),
], ids=["plain", "hpf-masks"])
@pytest.mark.parametrize("lambda_id", [0.0, 0.6], ids=["no-id", "id"])
def test_train_step_past_the_diversity_decay_equals_naive_reference(model, with_masks, speed, lambda_id):
    """Once lambda_ds reaches 0 the step skips L_ds and its second fakes (they weigh nothing), and stays
    equal to the naive step, which still computes them: here lambda_ds is 2, 1, then 0 twice."""
    f64, loss = torch.float64, replace(LOSS, ds_iter=2, lambda_id=lambda_id)
    state = make_state(model, dtype=f64)
    ref = copy.deepcopy(state)
    mask_fn = toy_mask_fn if with_masks else None
    for it in range(4):
        batch = make_batch(model, seed=it, dtype=f64)
        logs = train_step(state, batch, loss, ema_beta=0.9, mask_fn=mask_fn, speed=speed)
        ref_logs = reference_step(ref, batch, loss, ema_beta=0.9, mask_fn=mask_fn)
        ds_keys = {"G/latent_ds", "G/ref_ds"}
        assert logs.keys() == (ref_logs.keys() - ds_keys if it >= 2 else ref_logs.keys())
        for key, value in logs.items():
            torch.testing.assert_close(value, ref_logs[key], rtol=1e-12, atol=1e-12, msg=key)
        assert logs["G/lambda_ds"].item() == max(0.0, 2.0 * (1 - it / 2))
    _assert_same_state(state, ref)


@pytest.mark.parametrize("speed", [SHARED, UNSHARED], ids=["shared", "unshared"])
def test_the_diversity_fakes_are_decoded_only_while_lambda_ds_is_positive(speed, monkeypatch):
    """The speed-up is real: at lambda_ds = 0 the decoder runs on 8 fewer images per iteration
    (the second fakes of both G phases, batch 4)."""
    state, decoded = make_state(), []
    decode = state.nets.generator.decode_from

    def counting(*args, **kwargs):
        out = decode(*args, **kwargs)
        decoded.append(out.shape[0])
        return out

    monkeypatch.setattr(state.nets.generator, "decode_from", counting)
    images = {}
    for lambda_ds in (1.0, 0.0):
        decoded.clear()
        train_step(state, make_batch(), replace(LOSS, lambda_ds=lambda_ds), ema_beta=0.9, speed=speed)
        images[lambda_ds] = sum(decoded)
    assert images[1.0] - images[0.0] == 2 * 4


@pytest.mark.parametrize("speed", [SHARED, UNSHARED], ids=["shared", "unshared"])
def test_the_identity_outputs_decode_in_the_batch_of_the_fakes(speed, monkeypatch):
    """With shared passes the identity loss's outputs ride in the fakes' batches (one encoder and one
    decoder call fewer per G phase, the same images); without, each is a pass of its own (batch 4)."""
    state, encoded, decoded = make_state(), [], []
    G = state.nets.generator
    encode, decode = G.encode_image, G.decode_from
    monkeypatch.setattr(G, "encode_image", lambda x, masks=None: encoded.append(len(x)) or encode(x, masks))
    monkeypatch.setattr(G, "decode_from", lambda f, s, masks=None: decoded.append(len(s)) or decode(f, s, masks))
    train_step(state, make_batch(), replace(LOSS, lambda_ds=0.0, lambda_id=1.0), ema_beta=0.9, speed=speed)
    if speed.shared_passes:  # shared fakes and latent identity; phase 2's fake; cycle; ref fake and identity; cycle
        assert (encoded, decoded) == ([4, 4, 8, 4], [8, 4, 4, 8, 4])
    else:                    # phases 1-2 (fakes), then per G phase: fake, cycle, identity (of x_ref in phase 4)
        assert (encoded, decoded) == ([4] * 7, [4] * 8)


def test_identity_loss_of_the_first_phase_by_hand():
    """G/latent_id is |G(x_real, F(z_trg, y_org)) - x_real| with G and F as phase 3 sees them: as they
    started (phases 1-2 change D only)."""
    state, fresh = make_state(dtype=torch.float64), make_state(dtype=torch.float64)
    batch = make_batch(dtype=torch.float64)
    logs = train_step(state, batch, replace(LOSS, lambda_id=1.0), ema_beta=0.9, speed=UNSHARED)
    x = batch["x_real"]
    with torch.no_grad():
        same = fresh.nets.generator(x, fresh.nets.mapping_network(batch["z_trg"], batch["y_org"]))
    assert batch["y_org"].tolist() != batch["y_trg"].tolist()     # F's style of y_org, not of y_trg
    assert logs["G/latent_id"].item() == pytest.approx((same - x).abs().mean().item(), rel=1e-10)


def test_naive_reference_detects_a_changed_loss_weight():
    """Guard against a vacuous comparison: a different lambda_cyc must give a different state."""
    state = make_state(dtype=torch.float64)
    ref = copy.deepcopy(state)
    batch = make_batch(dtype=torch.float64)
    train_step(state, batch, LOSS, ema_beta=0.9)
    reference_step(ref, batch, replace(LOSS, lambda_cyc=1.29), ema_beta=0.9)
    with pytest.raises(AssertionError):
        _assert_same_state(state, ref)


def test_train_step_restores_requires_grad_flags():
    state = make_state()
    train_step(state, make_batch(), LOSS, ema_beta=0.999)
    for name, net in state.nets.items():
        assert all(p.requires_grad for p in net.parameters()), name
    for name, net in state.ema.items():
        assert not any(p.requires_grad for p in net.parameters()), name


# ---------------------------------------------------------------- which network moves when

def test_each_phase_steps_the_right_optimizers_and_skips_discarded_gradients(monkeypatch):
    state = make_state()
    nets = state.nets
    calls = []

    def snapshot(net):
        return [p.detach().clone() for p in net.parameters()]

    for name, opt in state.optimizers.items():
        real_step = opt.step

        def recording_step(*args, _name=name, _real=real_step, **kwargs):
            has_grad = {n: any(p.grad is not None for p in net.parameters()) for n, net in nets.items()}
            calls.append((_name, has_grad, {n: snapshot(net) for n, net in nets.items()}))
            return _real(*args, **kwargs)

        monkeypatch.setattr(opt, "step", recording_step)

    before = {n: snapshot(net) for n, net in nets.items()}
    train_step(state, make_batch(), LOSS, ema_beta=0.999)
    after = {n: snapshot(net) for n, net in nets.items()}

    names = [c[0] for c in calls]
    assert names[:2] == ["discriminator", "discriminator"]
    assert sorted(names[2:5]) == sorted(["generator", "mapping_network", "style_encoder"])
    assert names[5:] == ["generator"]

    # gradients present when each optimizer steps: only what is used (the rest is frozen or no_grad)
    d_phase = {"discriminator": True, "generator": False, "mapping_network": False, "style_encoder": False}
    latent_phase = {"discriminator": False, "generator": True, "mapping_network": True, "style_encoder": True}
    ref_phase = {"discriminator": False, "generator": True, "mapping_network": False, "style_encoder": False}
    assert calls[0][1] == d_phase and calls[1][1] == d_phase
    assert all(c[1] == latent_phase for c in calls[2:5])
    assert calls[5][1] == ref_phase

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    # D moves in the D phases only; E and F move in the latent G phase only; G moves in both G phases
    assert not same(before["discriminator"], calls[1][2]["discriminator"])
    assert same(calls[2][2]["discriminator"], after["discriminator"])
    assert same(calls[5][2]["style_encoder"], after["style_encoder"])
    assert same(calls[5][2]["mapping_network"], after["mapping_network"])
    assert not same(before["style_encoder"], after["style_encoder"])
    assert not same(before["mapping_network"], after["mapping_network"])
    assert not same(calls[5][2]["generator"], after["generator"])
    assert same(before["generator"], calls[2][2]["generator"])  # D phases leave G alone


def test_reference_guided_g_loss_would_move_e_and_f_if_they_were_stepped():
    """So the check above is meaningful: phase 4's loss does depend on E (and not on F)."""
    state = make_state()
    loss, _ = g_loss(state.nets, LOSS, 1.0, make_batch(), "ref")
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.nets.style_encoder.parameters())
    # F is not used by the reference-guided loss at all
    assert all(p.grad is None for p in state.nets.mapping_network.parameters())


# ---------------------------------------------------------------- frozen()

def test_frozen_skips_parameter_gradients_but_passes_input_gradients():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -3.0]]))
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    with frozen(lin):
        lin(x).sum().backward()
    assert lin.weight.grad is None and lin.bias.grad is None
    torch.testing.assert_close(x.grad, torch.tensor([[2.0, -3.0]]))
    assert lin.weight.requires_grad and lin.bias.requires_grad


def test_frozen_restores_the_original_flags_even_on_error():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    a.bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(a, b):
            assert not any(p.requires_grad for p in (*a.parameters(), *b.parameters()))
            raise RuntimeError("boom")
    assert a.weight.requires_grad and not a.bias.requires_grad
    assert b.weight.requires_grad and b.bias.requires_grad


# ---------------------------------------------------------------- EMA and state

def test_update_ema_is_beta_times_ema_plus_one_minus_beta_times_current():
    def module(w, bias, buf):
        m = nn.Linear(2, 1)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([w]))
            m.bias.copy_(torch.tensor([bias]))
        m.register_buffer("buf", torch.tensor(buf))
        return m

    ema = Networks(module([1.0, 2.0], 0.0, [0.0]), module([10.0, 10.0], 1.0, [0.0]),
                   module([0.0, 0.0], 0.0, [0.0]))
    cur = Networks(module([3.0, -2.0], 1.0, [7.0]), module([0.0, 20.0], 1.0, [3.0]),
                   module([5.0, 5.0], -5.0, [1.0]), discriminator=module([9.0, 9.0], 9.0, [9.0]))
    update_ema(ema, cur, beta=0.9)
    # 0.9 * ema + 0.1 * current
    torch.testing.assert_close(ema.generator.weight, torch.tensor([[1.2, 1.6]]))
    torch.testing.assert_close(ema.generator.bias, torch.tensor([0.1]))
    torch.testing.assert_close(ema.mapping_network.weight, torch.tensor([[9.0, 11.0]]))
    torch.testing.assert_close(ema.mapping_network.bias, torch.tensor([1.0]))
    torch.testing.assert_close(ema.style_encoder.weight, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(ema.style_encoder.bias, torch.tensor([-0.5]))
    # buffers are copied, not averaged
    assert ema.generator.buf.tolist() == [7.0] and ema.style_encoder.buf.tolist() == [1.0]
    # the current networks are untouched
    torch.testing.assert_close(cur.generator.weight, torch.tensor([[3.0, -2.0]]))


def test_make_train_state_optimizers_and_ema():
    state = make_state(optim=replace(OPTIM, lr=2e-4, mapping_lr=3e-6))
    assert set(state.optimizers) == set(NET_NAMES) and state.step == 0
    for name, opt in state.optimizers.items():
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.Adam)
        assert group["lr"] == (3e-6 if name == "mapping_network" else 2e-4)
        assert tuple(group["betas"]) == (0.0, 0.99) and group["weight_decay"] == 1e-4
        assert {id(p) for p in group["params"]} == {id(p) for p in getattr(state.nets, name).parameters()}
    assert state.ema.discriminator is None
    for name, ema_net in state.ema.items():
        net = getattr(state.nets, name)
        assert ema_net is not net and not ema_net.training
        for p_ema, p in zip(ema_net.parameters(), net.parameters()):
            assert torch.equal(p_ema, p) and p_ema.data_ptr() != p.data_ptr() and not p_ema.requires_grad


def test_step_counter_logs_and_lambda_ds_schedule():
    state = make_state()
    cfg = replace(LOSS, lambda_ds=2.0, ds_iter=2)
    seen = []
    for it in range(3):
        logs = train_step(state, make_batch(seed=it), cfg, ema_beta=0.999)
        assert state.step == it + 1
        seen.append(logs["G/lambda_ds"].item())
    assert seen == pytest.approx([2.0, 1.0, 0.0])
    expected_keys = ({f"D/{m}_{k}" for m in ("latent", "ref") for k in ("real", "fake", "reg")}
                     | {f"G/{m}_{k}" for m in ("latent", "ref") for k in ("adv", "sty", "cyc")}
                     | {"G/lambda_ds"})  # G/*_ds only while lambda_ds > 0: not at the last step
    assert set(logs) == expected_keys
    for key, value in logs.items():
        assert value.dim() == 0 and not value.requires_grad and torch.isfinite(value), key


def test_logged_first_phase_terms_match_a_recomputation_on_the_initial_networks():
    state = make_state()
    before = copy.deepcopy(state.nets)
    b = make_batch()
    logs = train_step(state, b, LOSS, ema_beta=0.999)
    # the first phase sees the initial networks
    _, terms = d_loss(before, LOSS, b, "latent")
    for k in ("real", "fake", "reg"):
        assert logs[f"D/latent_{k}"].item() == pytest.approx(terms[k].item(), rel=1e-5, abs=1e-7), k


# ---------------------------------------------------------------- the reference's losses, by hand

@pytest.mark.parametrize("mode", ["latent", "ref"])
def test_discriminator_loss_by_hand(mode):
    state = make_state()
    nets, b = state.nets, make_batch()
    G, mapping, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator
    loss, terms = d_loss(nets, LOSS, b, mode)

    x = b["x_real"].clone().requires_grad_(True)
    logits = D(x, b["y_org"])
    real = sum(-math.log(1 / (1 + math.exp(-v))) for v in logits.tolist()) / len(logits)
    (grad,) = torch.autograd.grad(logits.sum(), x)
    r1 = 0.5 * sum(grad[i].pow(2).sum().item() for i in range(len(x))) / len(x)
    with torch.no_grad():
        s = mapping(b["z_trg"], b["y_trg"]) if mode == "latent" else E(b["x_ref"], b["y_trg"])
        fake_logits = D(G(b["x_real"], s), b["y_trg"])
    fake = sum(-math.log(1 - 1 / (1 + math.exp(-v))) for v in fake_logits.tolist()) / len(fake_logits)

    assert terms["real"].item() == pytest.approx(real, rel=1e-5)
    assert terms["fake"].item() == pytest.approx(fake, rel=1e-5)
    assert terms["reg"].item() == pytest.approx(r1, rel=1e-4)
    assert r1 > 0
    assert loss.item() == pytest.approx(real + fake + LOSS.lambda_reg * r1, rel=1e-5)
    # only D's parameters take part in the graph
    loss.backward()
    assert all(p.grad is not None for p in D.parameters())
    for net in (G, mapping, E):
        assert all(p.grad is None for p in net.parameters())
    assert b["x_real"].grad is None and not b["x_real"].requires_grad  # the caller's tensor is untouched


@pytest.mark.parametrize("mode", ["latent", "ref"])
def test_generator_loss_by_hand(mode):
    state = make_state()
    nets, b = state.nets, make_batch()
    lambda_ds = 0.6
    loss, terms = g_loss(nets, LOSS, lambda_ds, b, mode)

    G, mapping, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator
    with torch.no_grad():
        if mode == "latent":
            s1, s2 = mapping(b["z_trg"], b["y_trg"]), mapping(b["z_trg2"], b["y_trg"])
        else:
            s1, s2 = E(b["x_ref"], b["y_trg"]), E(b["x_ref2"], b["y_trg"])
        fake, fake2 = G(b["x_real"], s1), G(b["x_real"], s2)
        adv = sum(math.log1p(math.exp(-v)) for v in D(fake, b["y_trg"]).tolist()) / 4
        sty = (s1 - E(fake, b["y_trg"])).abs().mean().item()
        ds = (fake - fake2).abs().mean().item()
        cyc = (b["x_real"] - G(fake, E(b["x_real"], b["y_org"]))).abs().mean().item()
    for key, value in {"adv": adv, "sty": sty, "ds": ds, "cyc": cyc}.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-5), key
    assert ds > 0
    expected = adv + LOSS.lambda_sty * sty - lambda_ds * ds + LOSS.lambda_cyc * cyc
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("shared_passes", [True, False], ids=["shared", "unshared"])
def test_train_step_uses_masks_of_x_real_and_recomputes_them_for_the_cycle(monkeypatch, shared_passes,
                                                                            precision):
    """G runs as encoder + decoder: every encoder pass on x_real uses x_real's masks (computed once),
    every cycle encodes x_fake with masks computed from that x_fake. x_real is encoded once per phase
    that makes its own fakes: 4 times without shared passes, twice with them, in every precision."""
    model = replace(MODEL, img_size=32, w_hpf=1.0)
    state = make_state(model)
    batch = make_batch(model)
    real_masks = make_masks(model)
    mask_inputs, encoded, decoded = [], [], []

    def mask_fn(x):
        mask_inputs.append(x)
        return real_masks if x is batch["x_real"] else make_masks(model, seed=len(mask_inputs))

    G = state.nets.generator
    real_encode, real_decode = G.encode_image, G.decode_from
    monkeypatch.setattr(G, "encode_image", lambda x, masks=None: encoded.append((x, masks)) or real_encode(x, masks))
    monkeypatch.setattr(G, "decode_from",
                        lambda f, s, masks=None: decoded.append(masks) or real_decode(f, s, masks))
    speed = Speed(precision=precision, shared_passes=shared_passes)
    train_step(state, batch, LOSS, ema_beta=0.999, mask_fn=mask_fn, speed=speed)
    assert len(mask_inputs) == 3 and mask_inputs[0] is batch["x_real"]
    on_real = [m for x, m in encoded if torch.equal(x, batch["x_real"])]
    on_fake = [(x, m) for x, m in encoded if not torch.equal(x, batch["x_real"])]
    assert len(on_real) == (2 if shared_passes else 4) and all(m is real_masks for m in on_real)
    assert len(on_fake) == 2 and all(m is not real_masks for _, m in on_fake)
    assert all(torch.equal(x, fed) for (x, _), fed in zip(on_fake, mask_inputs[1:]))
    # decoders: each cycle with its x_fake's masks, the rest with x_real's (repeated for 2-style batches)
    cycle_masks = [m for _, m in on_fake]
    assert len(decoded) == (6 if shared_passes else 8)
    for m in decoded:
        if any(m is c for c in cycle_masks):
            continue
        assert all(torch.equal(part, r) for r2, r in zip(m, real_masks) for part in r2.chunk(len(r2) // len(r)))


def test_shared_passes_equal_unshared_ones_after_one_fp32_iteration():
    """Every network (all its weights as one vector, and its EMA) within 1e-5 relative after one fp32
    iteration. Element by element fp32 need not match: Adam's first step moves a weight whose gradient is
    rounding noise (a conv bias before an instance norm) by +-lr whatever the noise (module docstring)."""
    model = replace(MODEL, img_size=32, base_dim=16, max_conv_dim=64, style_dim=16, hidden_dim=32)
    unshared, shared = make_state(model), make_state(model)
    batch = make_batch(model)
    train_step(unshared, batch, LOSS, ema_beta=0.9, speed=UNSHARED)
    train_step(shared, batch, LOSS, ema_beta=0.9, speed=SHARED)
    start = make_state(model)

    def flat(net):
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    for name in NET_NAMES:
        a, b = flat(getattr(unshared.nets, name)), flat(getattr(shared.nets, name))
        assert (a - b).norm() <= 1e-5 * a.norm(), name
        assert (a - flat(getattr(start.nets, name))).norm() > 100 * (a - b).norm(), name  # they did move
    for name, _ in unshared.ema.items():
        a, b = flat(getattr(unshared.ema, name)), flat(getattr(shared.ema, name))
        assert (a - b).norm() <= 1e-5 * a.norm(), f"ema.{name}"
