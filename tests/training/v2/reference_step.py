"""The StarGAN v2 iteration as the paper writes it: the reference that ``train_step`` must equal.

Each phase computes everything it needs from the networks as they are when it runs, and every loss
term is written out here (the binary cross-entropy as softplus), apart from :mod:`stargan.losses`:
    1-2. D with latent-guided, then reference-guided fakes: L_D = -L_adv + lambda_reg * R1
    3.   G, F and E with latent-guided styles: Eq. 5
    4.   G alone with reference-guided styles: Eq. 5
    5.   moving averages of G, F and E
Plain autograd: every gradient is cleared, the loss is back-propagated through every network and only
the phase's optimizers step. ``skip_discarded=True`` skips the gradients that are thrown away (as
``train_step`` does with ``frozen``); that is the step of commit d58d7a9, every phase as written,
which benchmarks/train_step.py times as "plain".

tests/training/v2/test_step.py compares ``train_step`` with :func:`reference_step` in float64 (in
float32 the two agree only to rounding, which Adam's first steps amplify: see that module).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from stargan.config import LossConfig
from stargan.nets.v2 import Networks
from stargan.training.updates import frozen

Batch = dict[str, torch.Tensor]
STEPPED = {"D/latent": ("discriminator",), "D/ref": ("discriminator",),
           "G/latent": ("generator", "mapping_network", "style_encoder"), "G/ref": ("generator",)}


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    # -log(sigmoid(l)) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l)
    return F.softplus(-logits).mean() if real else F.softplus(logits).mean()


def style(nets: Networks, b: Batch, source: str, i: int) -> torch.Tensor:
    """The i-th style (0 or 1): F(z_trg, y_trg) and F(z_trg2, y_trg), or E(x_ref, y_trg) and E(x_ref2, y_trg)."""
    if source == "latent":
        return nets.mapping_network(b["z_trg2" if i else "z_trg"], b["y_trg"])
    return nets.style_encoder(b["x_ref2" if i else "x_ref"], b["y_trg"])


def d_loss(nets: Networks, cfg: LossConfig, b: Batch, source: str, mask_fn=None, augment=None):
    """L_D = -L_adv + lambda_reg * R1, the fake styled by ``source``; with ``augment`` D sees
    augment(x) for real and fake x, and R1 is the gradient w.r.t. x_real before it."""
    G, D = nets.generator, nets.discriminator
    aug = augment if augment is not None else (lambda x: x)
    x = b["x_real"].detach().requires_grad_(True)
    out = D(aug(x), b["y_org"])
    if augment is not None:
        augment.observe(out)
    with record_function("R1"):
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        r1 = 0.5 * (grad ** 2).sum(dim=(1, 2, 3)).mean()
    with torch.no_grad():
        x_fake = G(b["x_real"], style(nets, b, source, 0), masks=mask_fn(b["x_real"]) if mask_fn else None)
    real, fake = bce(out, True), bce(D(aug(x_fake), b["y_trg"]), False)
    return real + fake + cfg.lambda_reg * r1, {"real": real, "fake": fake, "reg": r1}


def g_loss(nets: Networks, cfg: LossConfig, lambda_ds: float, b: Batch, source: str, mask_fn=None,
           augment=None):
    """Eq. 5, L_adv + lambda_sty * L_sty - lambda_ds * L_ds + lambda_cyc * L_cyc, styles from ``source``;
    the cycle reconstruction uses the masks of x_fake (as released)."""
    G, E, D = nets.generator, nets.style_encoder, nets.discriminator
    aug = augment if augment is not None else (lambda x: x)
    x, y_org, y_trg = b["x_real"], b["y_org"], b["y_trg"]
    masks = mask_fn(x) if mask_fn else None
    s_trg = style(nets, b, source, 0)
    fake = G(x, s_trg, masks=masks)
    adv = bce(D(aug(fake), y_trg), True)                                       # Eq. 1
    sty = (s_trg - E(fake, y_trg)).abs().mean()                                # Eq. 2
    fake2 = G(x, style(nets, b, source, 1), masks=masks).detach()
    ds = (fake - fake2).abs().mean()                                           # Eq. 3
    rec = G(fake, E(x, y_org), masks=mask_fn(fake.detach()) if mask_fn else None)
    cyc = (x - rec).abs().mean()                                               # Eq. 4
    terms = {"adv": adv, "sty": sty, "ds": ds, "cyc": cyc}
    loss = adv + cfg.lambda_sty * sty - lambda_ds * ds + cfg.lambda_cyc * cyc
    if cfg.lambda_id > 0:       # not in the paper: an image with a style of its own domain stays itself
        if source == "latent":
            same, s_own = x, nets.mapping_network(b["z_trg"], y_org)
        else:
            same, s_own = b["x_ref"], E(b["x_ref2"], y_trg)
        terms["id"] = (G(same, s_own, masks=mask_fn(same) if mask_fn else None) - same).abs().mean()
        loss = loss + cfg.lambda_id * terms["id"]
    return loss, terms


def reference_step(state, b: Batch, cfg: LossConfig, ema_beta: float, mask_fn=None,
                   skip_discarded: bool = False) -> dict[str, torch.Tensor]:
    """One iteration on ``state`` (a ``TrainState``); returns the loss terms keyed like train_step's."""
    nets, logs = state.nets, {}
    lambda_ds = cfg.lambda_ds * max(0.0, 1.0 - state.step / cfg.ds_iter) if cfg.ds_iter > 0 else 0.0
    losses = {"D/latent": lambda: d_loss(nets, cfg, b, "latent", mask_fn, state.augment),
              "D/ref": lambda: d_loss(nets, cfg, b, "ref", mask_fn, state.augment),
              "G/latent": lambda: g_loss(nets, cfg, lambda_ds, b, "latent", mask_fn, state.augment),
              "G/ref": lambda: g_loss(nets, cfg, lambda_ds, b, "ref", mask_fn, state.augment)}
    for phase, loss_of in losses.items():
        others = [net for name, net in nets.items() if name not in STEPPED[phase]]
        with frozen(*others) if skip_discarded else contextlib.nullcontext(), record_function(f"phase {phase}"):
            loss, terms = loss_of()
            for _, net in nets.items():
                for p in net.parameters():
                    p.grad = None
            loss.backward()
            for name in STEPPED[phase]:
                state.optimizers[name].step()
        logs.update({f"{phase}_{k}": v.detach() for k, v in terms.items()})
    with torch.no_grad(), record_function("phase EMA"):
        for name, ema_net in state.ema.items():
            for p_ema, p in zip(ema_net.parameters(), getattr(nets, name).parameters()):
                p_ema.copy_(ema_beta * p_ema + (1 - ema_beta) * p)
    if state.augment is not None:
        state.augment.after_step(state.world_size)
        logs.update(state.augment.logs())
    state.step += 1
    logs["G/lambda_ds"] = torch.tensor(lambda_ds)
    return logs
