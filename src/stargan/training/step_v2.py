"""One StarGAN v2 training iteration, written to be read next to the paper (Section 2, Eq. 1-7).

Per iteration, on a batch (x_real, y_org), reference images (x_ref, x_ref2) of domain y_trg and
latent codes (z_trg, z_trg2):
    1. D step, fake images styled by F(z_trg, y_trg)
    2. D step, fake images styled by E(x_ref, y_trg)
    3. G step with latent styles      -> updates G, F and E
    4. G step with reference styles   -> updates G only
    5. exponential moving average of G, F and E
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from stargan import losses
from stargan.config import LossConfig, OptimConfig
from stargan.nets.v2 import MaskFn, Masks, Networks
from stargan.training.updates import frozen, update



@dataclass
class TrainState:
    """Everything that changes while training; a checkpoint stores all of it."""

    nets: Networks
    ema: Networks                  # moving averages of G, F, E (no discriminator)
    optimizers: dict[str, torch.optim.Optimizer]
    step: int = 0                  # number of iterations done
    world_size: int = 1            # processes whose gradients are averaged (see distributed.py)


def optimizer_settings(name: str, optim: OptimConfig) -> dict[str, Any]:
    """Adam's settings for network ``name`` from the config (the mapping network has its own rate)."""
    return {"lr": optim.mapping_lr if name == "mapping_network" else optim.lr,
            "betas": (optim.beta1, optim.beta2), "weight_decay": optim.weight_decay}


def make_train_state(nets: Networks, optim: OptimConfig, world_size: int = 1) -> TrainState:
    ema = Networks(copy.deepcopy(nets.generator), copy.deepcopy(nets.mapping_network),
                   copy.deepcopy(nets.style_encoder))
    for _, net in ema.items():
        net.requires_grad_(False).eval()
    optimizers = {name: torch.optim.Adam(net.parameters(), **optimizer_settings(name, optim))
                  for name, net in nets.items()}
    return TrainState(nets=nets, ema=ema, optimizers=optimizers, world_size=world_size)


def discriminator_loss(nets: Networks, cfg: LossConfig, x_real: torch.Tensor, y_org: torch.Tensor,
                       y_trg: torch.Tensor, z_trg: torch.Tensor | None = None,
                       x_ref: torch.Tensor | None = None, masks: Masks = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = -L_adv + lambda_reg * R1, with the style taken from z_trg (latent) or x_ref (reference)."""
    x_real = x_real.detach().requires_grad_(True)
    out = nets.discriminator(x_real, y_org)
    loss_real = losses.adversarial(out, 1.0)
    loss_reg = losses.r1_penalty(out, x_real)

    with torch.no_grad():
        s_trg = (nets.mapping_network(z_trg, y_trg) if z_trg is not None
                 else nets.style_encoder(x_ref, y_trg))
        x_fake = nets.generator(x_real, s_trg, masks=masks)
    loss_fake = losses.adversarial(nets.discriminator(x_fake, y_trg), 0.0)

    loss = loss_real + loss_fake + cfg.lambda_reg * loss_reg
    return loss, {"real": loss_real.detach(), "fake": loss_fake.detach(), "reg": loss_reg.detach()}


def generator_loss(nets: Networks, cfg: LossConfig, lambda_ds: float, x_real: torch.Tensor,
                   y_org: torch.Tensor, y_trg: torch.Tensor,
                   z_trgs: tuple[torch.Tensor, torch.Tensor] | None = None,
                   x_refs: tuple[torch.Tensor, torch.Tensor] | None = None, masks: Masks = None,
                   mask_fn: MaskFn | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_G = L_adv + lambda_sty * L_sty - lambda_ds * L_ds + lambda_cyc * L_cyc (Eq. 5).

    ``masks`` are the face masks of x_real; the cycle reconstruction, whose input is x_fake, uses
    ``mask_fn(x_fake)`` instead (as released).
    """
    G, F, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator

    def style(i: int) -> torch.Tensor:
        return F(z_trgs[i], y_trg) if z_trgs is not None else E(x_refs[i], y_trg)

    s_trg = style(0)
    x_fake = G(x_real, s_trg, masks=masks)
    loss_adv = losses.adversarial(D(x_fake, y_trg), 1.0)
    loss_sty = losses.style_reconstruction(E(x_fake, y_trg), s_trg)

    x_fake2 = G(x_real, style(1), masks=masks)
    loss_ds = losses.diversity_sensitive(x_fake, x_fake2)

    s_org = E(x_real, y_org)
    masks_fake = mask_fn(x_fake.detach()) if mask_fn is not None else None
    x_rec = G(x_fake, s_org, masks=masks_fake)
    loss_cyc = losses.cycle_consistency(x_rec, x_real)

    loss = loss_adv + cfg.lambda_sty * loss_sty - lambda_ds * loss_ds + cfg.lambda_cyc * loss_cyc
    return loss, {"adv": loss_adv.detach(), "sty": loss_sty.detach(), "ds": loss_ds.detach(),
                  "cyc": loss_cyc.detach()}


@torch.no_grad()
def update_ema(ema: Networks, nets: Networks, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * current, for every parameter of G, F and E."""
    for name, ema_net in ema.items():
        for p_ema, p in zip(ema_net.parameters(), getattr(nets, name).parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(ema_net.buffers(), getattr(nets, name).buffers()):
            b_ema.copy_(b)


def train_step(state: TrainState, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
               ema_beta: float, mask_fn: MaskFn | None = None) -> dict[str, torch.Tensor]:
    """Run exactly one training iteration on ``batch`` and advance ``state.step`` by one.

    ``batch`` holds x_real, y_org, x_ref, x_ref2, y_trg, z_trg, z_trg2 on the networks' device.
    ``mask_fn`` (w_hpf > 0) gives the face masks of images: those of x_real serve every generator
    call on x_real (computed once: x_real and the mask network do not change within the iteration),
    the cycle reconstruction recomputes them from x_fake.
    Returns the detached loss terms, keyed like ``D/latent_real`` or ``G/ref_cyc``.
    """
    nets = state.nets
    x_real, y_org, y_trg = batch["x_real"], batch["y_org"], batch["y_trg"]
    z_trgs = (batch["z_trg"], batch["z_trg2"])
    x_refs = (batch["x_ref"], batch["x_ref2"])
    lambda_ds = losses.lambda_ds_at(state.step, loss_cfg.lambda_ds, loss_cfg.ds_iter)
    masks = mask_fn(x_real) if mask_fn is not None else None
    logs: dict[str, torch.Tensor] = {}

    # 1-2. Discriminator, with latent-guided then reference-guided fakes.
    for mode, kwargs in (("latent", {"z_trg": z_trgs[0]}), ("ref", {"x_ref": x_refs[0]})):
        d_loss, terms = discriminator_loss(nets, loss_cfg, x_real, y_org, y_trg, masks=masks, **kwargs)
        update(state, d_loss, ("discriminator",))
        logs.update({f"D/{mode}_{k}": v for k, v in terms.items()})

    # 3. Generator, mapping network and style encoder, with latent-guided styles.
    with frozen(nets.discriminator):
        g_loss, terms = generator_loss(nets, loss_cfg, lambda_ds, x_real, y_org, y_trg,
                                       z_trgs=z_trgs, masks=masks, mask_fn=mask_fn)
        update(state, g_loss, ("generator", "mapping_network", "style_encoder"))
    logs.update({f"G/latent_{k}": v for k, v in terms.items()})

    # 4. Generator only, with reference-guided styles.
    with frozen(nets.discriminator, nets.style_encoder, nets.mapping_network):
        g_loss, terms = generator_loss(nets, loss_cfg, lambda_ds, x_real, y_org, y_trg,
                                       x_refs=x_refs, masks=masks, mask_fn=mask_fn)
        update(state, g_loss, ("generator",))
    logs.update({f"G/ref_{k}": v for k, v in terms.items()})

    # 5. Moving averages used for sampling and evaluation.
    update_ema(state.ema, nets, ema_beta)
    state.step += 1
    logs["G/lambda_ds"] = torch.tensor(lambda_ds)
    return logs
