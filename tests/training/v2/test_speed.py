"""Speed options of the v2 step: bf16/fp16 autocast, channels_last, torch.compile with eager fallback.

The fp32 step (with and without shared passes, channels_last, and the precision path's wrappers with
autocast made the identity) is checked against the naive reference in test_step.py.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from stargan.config import Config
from stargan.training.v2.speed import Speed, inductor_cache_dir, make_speed, prepare_networks, verify_compiled
from stargan.training.v2.step import train_step
from .test_step import LOSS, NET_NAMES, make_batch, make_state

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def flat(net) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for p in net.parameters()])


def run(speed: Speed, iters: int = 2, device: str = "cpu", compile_nets: bool = False, fused: bool = False):
    state = make_state()
    if fused:  # the loop's choice for fp16: Adam's fused kernels skip overflowed steps without a host sync
        state.optimizers = {name: torch.optim.Adam(opt.param_groups[0]["params"], fused=True,
                                                   **{k: opt.defaults[k] for k in ("lr", "betas", "weight_decay")})
                            for name, opt in state.optimizers.items()}
    for _, net in state.nets.items():
        net.to(device)
    for _, net in state.ema.items():
        net.to(device)
    prepare_networks(state.nets, speed, compile_nets=compile_nets)
    logs = [train_step(state, {k: v.to(device) for k, v in make_batch(seed=i).items()}, LOSS, 0.9,
                       speed=speed) for i in range(iters)]
    return state, logs


def assert_close_to_fp32(state, reference, min_cosine: float) -> None:
    """The updates point the same way as fp32's. (Their distance is no measure: Adam's first steps move
    a weight whose gradient is rounding noise, a bias before an instance norm, by +-lr either way.)"""
    for name in NET_NAMES:
        a, b = flat(getattr(state.nets, name)).cpu(), flat(getattr(reference.nets, name)).cpu()
        start = flat(getattr(make_state().nets, name))
        assert torch.cosine_similarity(a - start, b - start, dim=0) >= min_cosine, name


def assert_first_losses_close(logs, reference_logs, rel: float) -> None:
    for key, value in reference_logs[0].items():  # the first iteration starts from equal networks
        assert abs(logs[0][key].item() - value.item()) <= rel * abs(value.item()) + 1e-3, key


def assert_state_stays_fp32(state) -> None:
    for name, net in [*state.nets.items(), *[(f"ema.{n}", m) for n, m in state.ema.items()]]:
        assert all(p.dtype == torch.float32 for p in net.parameters()), name
    for name, opt in state.optimizers.items():
        for s in opt.state.values():
            assert s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32, name


def test_bf16_keeps_weights_optimizer_and_ema_in_fp32_and_lands_near_fp32():
    reference, reference_logs = run(Speed())
    state, logs = run(Speed(precision="bf16"))
    assert_state_stays_fp32(state)
    for key, value in logs[-1].items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
    assert_first_losses_close(logs, reference_logs, rel=0.05)
    assert_close_to_fp32(state, reference, min_cosine=0.8)


def test_the_networks_passes_give_the_step_fp32_outputs_in_every_precision():
    """Speed.passes runs the networks in bf16 and gives their outputs back in fp32: the step's own
    arithmetic (losses, augmentation, R1's gradient) is never bf16. G's encoder features stay bf16 (only
    G's decoder reads them). In fp32 the passes are the networks' own methods."""
    state, b = make_state(), make_batch()
    nets = Speed(precision="bf16").passes(state.nets)
    features = nets.encode(b["x_real"], None)
    assert features[0].dtype == torch.bfloat16
    s = nets.mapping_network(b["z_trg"], b["y_trg"])
    outputs = [s, nets.style_encoder(b["x_ref"], b["y_trg"]), nets.decode(features, s, None),
               nets.discriminator(b["x_real"], b["y_org"]), nets.discriminator_for_r1(b["x_real"], b["y_org"])]
    assert all(out.dtype == torch.float32 for out in outputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # ... computed in bf16
        assert torch.equal(outputs[-1], state.nets.discriminator(b["x_real"], b["y_org"]).float())
    fp32 = Speed().passes(state.nets)
    assert fp32.style_encoder is state.nets.style_encoder and fp32.decode == state.nets.generator.decode_from


def test_channels_last_equals_contiguous_in_fp32():
    reference, _ = run(Speed())
    state, _ = run(Speed(channels_last=True))
    assert state.nets.generator.from_rgb.weight.is_contiguous(memory_format=torch.channels_last)
    for name in NET_NAMES:
        a, b = flat(getattr(state.nets, name)), flat(getattr(reference.nets, name))
        assert (a - b).norm() <= 1e-5 * b.norm(), name


def test_fp16_is_refused_on_a_cpu_and_unknown_precisions_are_named():
    with pytest.raises(ValueError, match="fp16 needs CUDA.*bf16"):
        make_speed("fp16", "cpu")
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        make_speed("fp8", "cpu")


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    reference, _ = run(Speed())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        speed = Speed()
        state, _ = run(speed, compile_nets=True)
    messages = [str(w.message) for w in caught if "train.compile" in str(w.message)]
    assert len(messages) == 1 and "no C++ compiler" in messages[0]
    assert speed.compiled == {}
    for name in NET_NAMES:
        assert torch.equal(flat(getattr(state.nets, name)), flat(getattr(reference.nets, name))), name


@pytest.mark.slow
def test_compiled_step_passes_its_check_and_equals_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # inductor's cache of this machine, in tmp
    reference, _ = run(Speed(), iters=1)
    speed = Speed()
    state = make_state()
    prepare_networks(state.nets, speed, compile_nets=True)
    assert verify_compiled(state.nets, speed, make_batch(seed=0)) == {}
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(inductor_cache_dir())
    assert str(inductor_cache_dir()).startswith(str(tmp_path / "stargan" / "inductor"))
    train_step(state, make_batch(seed=0), LOSS, 0.9, speed=speed)
    assert speed.compiled, "compilation fell back to eager"
    for name in NET_NAMES:
        a, b = flat(getattr(state.nets, name)), flat(getattr(reference.nets, name))
        assert (a - b).norm() <= 1e-5 * b.norm(), name


def fake_compile(monkeypatch, broken: str, how):
    """torch.compile as the identity, but the pass ``broken`` gives ``how(output)``."""
    def compile_(fn, *args, **kwargs):
        name = getattr(fn, "__name__", type(fn).__name__)
        if name == broken:
            return lambda *a, **k: how(fn(*a, **k))
        return fn
    monkeypatch.setattr(torch, "compile", compile_)


@pytest.mark.parametrize("broken, how, problem", [
    ("decode_from", lambda x: x * float("nan"), "non-finite output 0"),
    ("MappingNetwork", lambda s: s * 1.5, "outputs"),
    ("Discriminator", lambda out: out + 0 * out.detach(), None),  # equal: passes
])
def test_the_check_names_a_non_finite_or_divergent_compiled_pass(monkeypatch, broken, how, problem):
    fake_compile(monkeypatch, broken, how)
    for precision in ("fp32", "bf16"):
        speed = Speed(precision=precision)
        state = make_state()
        prepare_networks(state.nets, speed, compile_nets=True)
        failed = verify_compiled(state.nets, speed, make_batch(seed=0))
        if problem is None:
            assert failed == {}
        else:
            name = {"decode_from": "generator.decode_from", "MappingNetwork": "mapping_network"}[broken]
            assert list(failed) == [name] and problem in failed[name], failed


def test_a_divergent_compiled_pass_turns_compilation_off_before_the_first_update(monkeypatch):
    from stargan.distributed import World
    from stargan.training.v2.loop import check_compiled

    fake_compile(monkeypatch, "StyleEncoder", lambda s: s + 1)
    speed = Speed()
    state = make_state()
    before = {name: flat(getattr(state.nets, name)) for name in NET_NAMES}
    prepare_networks(state.nets, speed, compile_nets=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_compiled(state, speed, make_batch(seed=0), None, World())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "the compiled style_encoder" in messages[0] and "eagerly" in messages[0]
    assert speed.compiled == {}
    for name in NET_NAMES:  # the check updates nothing
        assert torch.equal(flat(getattr(state.nets, name)), before[name]), name


def test_resume_across_precisions_gives_the_same_checkpoint_format(tmp_path):
    from safetensors.torch import load_file

    from stargan.checkpoints import restore_train_state, save_checkpoint

    config = Config()
    saved = {}
    for precision in ("bf16", "fp32"):
        state, _ = run(Speed(precision=precision, channels_last=precision == "bf16"), iters=1)
        run_dir = tmp_path / precision
        ckpt = save_checkpoint(run_dir, state, config, keep_last=1)
        saved[precision] = load_file(str(ckpt / "networks.safetensors"))
        resumed = make_state()
        restore_train_state(run_dir, resumed, config)
        # continue the bf16 run in fp32 and the fp32 run in bf16
        other = Speed(precision="fp32" if precision == "bf16" else "bf16")
        train_step(resumed, make_batch(seed=5), LOSS, 0.9, speed=other)
        assert_state_stays_fp32(resumed)
        assert resumed.step == 2
    assert saved["bf16"].keys() == saved["fp32"].keys()
    for key, value in saved["bf16"].items():
        assert value.dtype == saved["fp32"][key].dtype == torch.float32 and value.is_contiguous(), key


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_step_runs_in_each_precision_with_fp32_state(precision):
    reference, reference_logs = run(Speed(), device="cpu")
    speed = make_speed(precision, "cuda", channels_last=True)
    state, logs = run(speed, device="cuda", fused=precision == "fp16")
    assert_state_stays_fp32(state)
    assert all(torch.isfinite(v) for v in logs[-1].values())
    if precision == "fp16":
        assert len(speed.scalers) == 4
    for _, net in state.nets.items():
        net.cpu()
    assert_first_losses_close(logs, reference_logs, rel=0.05)
    assert_close_to_fp32(state, reference, min_cosine=0.8 if precision != "fp32" else 0.99)
