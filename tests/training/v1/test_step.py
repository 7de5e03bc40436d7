"""One StarGAN v1 iteration, checked against a naive re-implementation of the released procedure.

The naive reference writes every loss with plain tensor operations, zeroes every gradient, backwards
through everything and steps the optimizer of the phase; ``train_step`` skips D's parameter
gradients in the G phase (``frozen``). The comparison runs in float64, where both agree to rounding.
"""
from __future__ import annotations

import copy
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stargan.config import V1Config, V1ModelConfig
from stargan.data import make_demo_dataset
from stargan.data.v1 import Batches, condition_vector, open_data
from stargan.nets.v1 import build_networks
from stargan.state import make_v1_train_state
from stargan.training.v1.step import domain_logits, generator_loss, learning_rates_at, train_step

MODEL = V1ModelConfig(img_size=16, c_dim=3, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3)
MODELS = {"celeba": replace(MODEL, c_dim=5), "folders": MODEL, "both": replace(MODEL, c_dim=5, c2_dim=3)}
# Weights other than the defaults so that swapped or missing weights show.
CONFIG = V1Config().with_overrides(["loss.lambda_cls=1.5", "loss.lambda_rec=7", "loss.lambda_gp=3",
                                    "optim.n_critic=2", "optim.decay_start=2", "train.total_iters=4"])
CELEBA_HEADER = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Male", "Young")


def config_for(mode: str, *overrides: str) -> V1Config:
    return replace(CONFIG, model=MODELS[mode]).with_overrides([f"data.mode={mode}", *overrides])


def make_state(model: V1ModelConfig, config: V1Config = CONFIG, dtype: torch.dtype = torch.float32,
               seed: int = 0):
    torch.manual_seed(seed)
    nets = build_networks(model).to(dtype)
    with torch.no_grad():  # norms start at identity: perturb them so that they matter
        for name, p in nets.generator.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return make_v1_train_state(nets, config.optim)


def make_batch(model: V1ModelConfig, mode: str, step: int, b: int = 4, dtype=torch.float32) -> dict:
    """A hand-made batch: dataset ``step % 2`` in "both" mode; attribute labels for CelebA."""
    g = torch.Generator().manual_seed(step)
    dataset = step % 2 if mode == "both" else 0
    sizes = (model.c_dim, model.c2_dim) if model.c2_dim else (model.c_dim,)
    if mode == "celeba" or (mode == "both" and dataset == 0):
        label_org = (torch.rand(b, sizes[dataset], generator=g) > 0.5).float()
    else:
        label_org = torch.randint(sizes[dataset], (b,), generator=g)
    label_trg = label_org[torch.randperm(b, generator=g)]
    cast = (lambda t: t.to(dtype)) if label_org.is_floating_point() else (lambda t: t)  # noqa: E731
    return {"x_real": (torch.rand(b, 3, model.img_size, model.img_size, generator=g) * 2 - 1).to(dtype),
            "label_org": cast(label_org), "label_trg": cast(label_trg),
            "c_org": condition_vector(label_org, dataset, sizes).to(dtype),
            "c_trg": condition_vector(label_trg, dataset, sizes).to(dtype),
            "dataset": torch.tensor(dataset), "alpha": torch.rand(b, 1, 1, 1, generator=g).to(dtype)}


# ---------------------------------------------------------------- naive reference

def _cls(logits, labels):
    if labels.is_floating_point():   # -[y log s(l) + (1 - y) log(1 - s(l))], summed over attributes
        return -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).sum() / len(logits)
    return -F.log_softmax(logits, dim=1)[torch.arange(len(labels)), labels].mean()


def _slice(out_cls, b, model):
    if not model.c2_dim:
        return out_cls
    return out_cls[:, :model.c_dim] if int(b["dataset"]) == 0 else out_cls[:, model.c_dim:]


def naive_train_step(state, b, cfg: V1Config) -> None:
    G, D, opts = state.nets.generator, state.nets.discriminator, state.optimizers
    model, lam = cfg.model, cfg.loss
    decay = max(0, state.step - cfg.optim.decay_start) / (cfg.train.total_iters - cfg.optim.decay_start)
    for name, base in (("generator", cfg.optim.g_lr), ("discriminator", cfg.optim.d_lr)):
        opts[name].param_groups[0]["lr"] = base * (1 - decay)
    x = b["x_real"]

    def update(loss, name):
        for p in (*G.parameters(), *D.parameters()):
            p.grad = None
        loss.backward()
        opts[name].step()

    src, cls = D(x)
    fake = G(x, b["c_trg"]).detach()
    x_hat = (b["alpha"] * x + (1 - b["alpha"]) * fake).requires_grad_(True)
    src_hat, _ = D(x_hat)
    (grad,) = torch.autograd.grad(src_hat, x_hat, grad_outputs=torch.ones_like(src_hat), create_graph=True)
    gp = ((grad.reshape(len(x), -1).pow(2).sum(1).sqrt() - 1) ** 2).mean()
    update(-src.mean() + D(fake)[0].mean() + lam.lambda_cls * _cls(_slice(cls, b, model), b["label_org"])
           + lam.lambda_gp * gp, "discriminator")

    iteration = state.step // 2 if model.c2_dim else state.step   # both datasets in one released iteration
    if (iteration + 1) % cfg.optim.n_critic == 0:
        fake = G(x, b["c_trg"])
        src, cls = D(fake)
        rec = G(fake, b["c_org"])
        update(-src.mean() + lam.lambda_cls * _cls(_slice(cls, b, model), b["label_trg"])
               + lam.lambda_rec * (x - rec).abs().mean(), "generator")
    state.step += 1


def _assert_same_state(a, b, atol=1e-10):
    for name in ("generator", "discriminator"):
        for (k, x), y in zip(getattr(a.nets, name).state_dict().items(),
                             getattr(b.nets, name).state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=f"{name}.{k}")
        sa, sb = a.optimizers[name].state_dict(), b.optimizers[name].state_dict()
        assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
        assert sa["state"].keys() == sb["state"].keys()
        for i in sa["state"]:
            for key in ("exp_avg", "exp_avg_sq"):   # relative to each tensor's own scale
                x, y = sa["state"][i][key], sb["state"][i][key]
                scale = y.abs().max().item() + 1e-30
                torch.testing.assert_close(x / scale, y / scale, rtol=0, atol=1e-9, msg=f"{name} {key} {i}")
    assert a.step == b.step


@pytest.mark.parametrize("mode", ["celeba", "folders", "both"])
def test_train_step_equals_naive_reference(mode):
    cfg = config_for(mode)
    state = make_state(cfg.model, cfg, dtype=torch.float64)
    ref = copy.deepcopy(state)
    # G steps at 1 and 3 (both: 2 and 3); the learning rates halve at step 3; datasets alternate
    for step in range(4):
        batch = make_batch(cfg.model, mode, step, dtype=torch.float64)
        train_step(state, batch, cfg)
        naive_train_step(ref, batch, cfg)
    _assert_same_state(state, ref)
    fresh = make_state(cfg.model, cfg, dtype=torch.float64)
    for name in ("generator", "discriminator"):   # the check has teeth: everything moved
        moved, start = getattr(state.nets, name), getattr(fresh.nets, name)
        for (k, p), q in zip(moved.named_parameters(), start.parameters()):
            assert not torch.equal(p, q), f"{name}.{k}"


def test_naive_reference_detects_a_changed_loss_weight():
    cfg = config_for("celeba")
    state = make_state(cfg.model, cfg, dtype=torch.float64)
    ref = copy.deepcopy(state)
    for step in range(2):
        batch = make_batch(cfg.model, "celeba", step, dtype=torch.float64)
        train_step(state, batch, cfg)
        naive_train_step(ref, batch, cfg.with_overrides(["loss.lambda_rec=6.9"]))
    with pytest.raises(AssertionError):
        _assert_same_state(state, ref)


# ---------------------------------------------------------------- schedule and phases

@pytest.mark.parametrize("step, factor", [(0, 1.0), (99, 1.0), (100, 1.0), (150, 0.5), (175, 0.25),
                                          (199, 0.01), (200, 0.0), (250, 0.0)])
def test_learning_rates_are_constant_then_decay_linearly_to_zero(step, factor):
    optim = replace(CONFIG.optim, g_lr=2e-4, d_lr=1e-4, decay_start=100)
    g_lr, d_lr = learning_rates_at(step, optim, total_iters=200)
    assert g_lr == pytest.approx(2e-4 * factor) and d_lr == pytest.approx(1e-4 * factor)


def test_learning_rates_without_a_decay_window_stay_constant():
    optim = replace(CONFIG.optim, decay_start=300)
    assert learning_rates_at(299, optim, total_iters=200) == (optim.g_lr, optim.d_lr)


def test_generator_moves_only_every_n_critic_iterations_and_logs_say_so():
    cfg = config_for("folders", "optim.n_critic=3", "train.total_iters=100", "optim.decay_start=100")
    state = make_state(cfg.model, cfg)
    g_moved, d_moved = [], []
    for step in range(6):
        g0 = [p.detach().clone() for p in state.nets.generator.parameters()]
        d0 = [p.detach().clone() for p in state.nets.discriminator.parameters()]
        logs = train_step(state, make_batch(cfg.model, "folders", step), cfg)
        g_moved.append(not all(torch.equal(a, b) for a, b in zip(g0, state.nets.generator.parameters())))
        d_moved.append(not all(torch.equal(a, b) for a, b in zip(d0, state.nets.discriminator.parameters())))
        assert ("G/rec" in logs) == g_moved[-1]
        assert {"D/real", "D/fake", "D/cls", "D/gp", "G/lr", "D/lr"} <= logs.keys()
        for key, value in logs.items():
            assert value.dim() == 0 and not value.requires_grad and torch.isfinite(value), key
    assert g_moved == [False, False, True, False, False, True]
    assert all(d_moved) and state.step == 6
    assert all(p.requires_grad for p in state.nets.discriminator.parameters())   # unfrozen after G


def test_with_two_datasets_the_generator_trains_on_both_whatever_the_parity_of_n_critic():
    cfg = config_for("both", "optim.n_critic=2", "train.total_iters=100", "optim.decay_start=100")
    state = make_state(cfg.model, cfg)
    g_steps = [("G/rec" in train_step(state, make_batch(cfg.model, "both", step), cfg)) for step in range(8)]
    # released iteration i = our steps 2i (dataset 0) and 2i + 1 (dataset 1); G after iterations 1 and 3
    assert g_steps == [False, False, True, True, False, False, True, True]


def test_train_step_sets_the_scheduled_learning_rates():
    cfg = config_for("folders")   # decay from step 2 to 0 at step 4
    state = make_state(cfg.model, cfg)
    seen = []
    for step in range(4):
        logs = train_step(state, make_batch(cfg.model, "folders", step), cfg)
        seen += [logs["G/lr"].item(), state.optimizers["discriminator"].param_groups[0]["lr"]]
    assert seen == pytest.approx([1e-4, 1e-4] * 3 + [5e-5, 5e-5])


# ---------------------------------------------------------------- two datasets: the mask vector

def test_domain_logits_slice_per_dataset():
    out_cls = torch.arange(8.0)[None]
    both = replace(MODEL, c_dim=5, c2_dim=3)
    assert domain_logits(out_cls, 0, both).tolist() == [[0, 1, 2, 3, 4]]
    assert domain_logits(out_cls, 1, both).tolist() == [[5, 6, 7]]
    assert domain_logits(out_cls[:, :3], 0, MODEL).tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("dataset", [0, 1])
def test_each_dataset_trains_only_its_own_domain_logits(dataset):
    cfg = config_for("both", "optim.n_critic=1000")
    state = make_state(cfg.model, cfg)
    batch = make_batch(cfg.model, "both", step=dataset)
    assert int(batch["dataset"]) == dataset
    assert batch["c_org"][:, -2:].tolist() == [[1 - dataset, dataset]] * 4   # the mask vector
    train_step(state, batch, cfg)
    grad = state.nets.discriminator.conv2.weight.grad   # D's domain head, [c_dim + c2_dim, ...]
    own, other = (slice(0, 5), slice(5, 8)) if dataset == 0 else (slice(5, 8), slice(0, 5))
    assert torch.all(grad[other] == 0) and torch.all(grad[own].flatten(1).abs().sum(1) > 0)


def test_generator_classification_uses_the_target_datasets_logits():
    cfg = config_for("both")
    state = make_state(cfg.model, cfg)
    b = make_batch(cfg.model, "both", step=1)
    _, terms = generator_loss(state.nets, cfg, b["x_real"], b["c_org"], b["c_trg"], b["label_trg"], dataset=1)
    with torch.no_grad():
        _, out_cls = state.nets.discriminator(state.nets.generator(b["x_real"], b["c_trg"]))
    expected = F.cross_entropy(out_cls[:, 5:], b["label_trg"])
    assert terms["cls"].item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- one iteration on real data, per mode

def make_celeba(base: Path, n: int = 10) -> Path:
    """``base/images/00000k.jpg`` and ``base/list_attr_celeba.txt`` with random attributes."""
    rng = random.Random(0)
    (base / "images").mkdir(parents=True)
    lines = [str(n), " ".join(CELEBA_HEADER)]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (20, 20), (rng.randrange(256), 90, 160)).save(base / "images" / name)
        lines.append(name + " " + " ".join(rng.choice(("1", "-1")) for _ in CELEBA_HEADER))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return base / "images"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("v1data")
    folders = make_demo_dataset(base / "demo", img_size=16, train_per_domain=4, val_per_domain=2)
    return {"celeba": make_celeba(base / "celeba"), "folders": folders}


@pytest.mark.parametrize("mode", ["celeba", "folders", "both"])
def test_one_iteration_per_mode_on_real_batches(roots, mode):
    root = roots["folders"] if mode == "folders" else roots["celeba"]
    cfg = config_for(mode, f"data.root={root}", f"data.rafd_root={roots['folders']}", "data.test_size=2",
                     "data.crop_size=0", "data.batch_size=2", "optim.n_critic=1")
    data = open_data(cfg.data, cfg.model)
    batches = Batches(data, cfg.model.img_size, cfg.data.batch_size, seed=0, crop_size=0)
    state = make_state(cfg.model, cfg)
    before = copy.deepcopy(state.nets)
    for step in range(2 if mode == "both" else 1):
        logs = train_step(state, batches[step], cfg)
        assert {"D/real", "D/gp", "G/cls", "G/rec"} <= logs.keys()
        assert all(torch.isfinite(v) for v in logs.values())
    for name in ("generator", "discriminator"):
        assert not torch.equal(getattr(before, name).main[0].weight, getattr(state.nets, name).main[0].weight)
