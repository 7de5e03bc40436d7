"""One StarGAN v2 training iteration, written to be read next to the paper (Section 2, Eq. 1-7).

Per iteration, on a batch (x_real, y_org), reference images (x_ref, x_ref2) of domain y_trg and
latent codes (z_trg, z_trg2):
    1. D step, fake images styled by F(z_trg, y_trg)
    2. D step, fake images styled by E(x_ref, y_trg)
    3. G step with latent styles      -> updates G, F and E
    4. G step with reference styles   -> updates G only
    5. exponential moving average of G, F and E

``state.augment`` (``train.augment``, off in the paper's presets) transforms every image D sees, real
and fake, in the D and G steps (see :mod:`stargan.training.augment`).

:func:`train_step` shares work across the phases where the networks have not changed in between
(``Speed.shared_passes``, the default; exact, see :func:`_shared_train_step`); with it off it runs the
phases as written, through :func:`discriminator_loss` and :func:`generator_loss`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.profiler import record_function

from stargan import losses
from stargan.config import LossConfig, OptimConfig
from stargan.nets.v2 import MaskFn, Masks, Networks
from stargan.state import TrainState
from stargan.training.augment import DiffAugment
from stargan.training.speed import Speed
from stargan.training.updates import frozen, update


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def ema_beta_at(step: int, optim: OptimConfig) -> float:
    """The moving average's beta for the update after iteration ``step`` (0-based).

    ``optim.ema_warmup`` ramps it as min(ema_beta, (1 + t) / (10 + t)). A plain beta of 0.999 keeps
    0.999^t of the random initialisation (37% after 1,000 iterations), so short runs sample from
    noise. With the ramp the weight of iteration t's networks in the average grows like t^9: the
    initialisation is gone after a few dozen iterations (its weight is 9! t! / (t + 9)!), the average
    spans roughly the last tenth of training, and the ramp reaches 0.999 at t = 8,990, after which it
    is the paper's average. It depends on the step alone, so a resumed run continues it exactly.
    """
    if not optim.ema_warmup:
        return optim.ema_beta
    return min(optim.ema_beta, (1 + step) / (10 + step))


def discriminator_loss(nets: Networks, cfg: LossConfig, x_real: torch.Tensor, y_org: torch.Tensor,
                       y_trg: torch.Tensor, z_trg: torch.Tensor | None = None,
                       x_ref: torch.Tensor | None = None, masks: Masks = None,
                       augment: DiffAugment | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = -L_adv + lambda_reg * R1, with the style taken from z_trg (latent) or x_ref (reference).

    With ``augment`` D sees augment(x) for real and fake x; R1 is taken w.r.t. x_real before it.
    """
    aug = augment or _identity
    x_real = x_real.detach().requires_grad_(True)
    out = nets.discriminator(aug(x_real), y_org)
    if augment is not None:
        augment.observe(out)
    loss_real = losses.adversarial(out, 1.0)
    with record_function("R1"):
        loss_reg = losses.r1_penalty(out, x_real)

    with torch.no_grad():
        s_trg = (nets.mapping_network(z_trg, y_trg) if z_trg is not None
                 else nets.style_encoder(x_ref, y_trg))
        x_fake = nets.generator(x_real, s_trg, masks=masks)
    loss_fake = losses.adversarial(nets.discriminator(aug(x_fake), y_trg), 0.0)

    loss = loss_real + loss_fake + cfg.lambda_reg * loss_reg
    return loss, {"real": loss_real.detach(), "fake": loss_fake.detach(), "reg": loss_reg.detach()}


def generator_loss(nets: Networks, cfg: LossConfig, lambda_ds: float, x_real: torch.Tensor,
                   y_org: torch.Tensor, y_trg: torch.Tensor,
                   z_trgs: tuple[torch.Tensor, torch.Tensor] | None = None,
                   x_refs: tuple[torch.Tensor, torch.Tensor] | None = None, masks: Masks = None,
                   mask_fn: MaskFn | None = None, augment: DiffAugment | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_G = L_adv + lambda_sty * L_sty - lambda_ds * L_ds + lambda_cyc * L_cyc (Eq. 5).

    ``masks`` are the face masks of x_real; the cycle reconstruction, whose input is x_fake, uses
    ``mask_fn(x_fake)`` instead (as released). With ``augment``, L_adv is taken on D(augment(x_fake)).
    """
    aug = augment or _identity
    G, F, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator

    def style(i: int) -> torch.Tensor:
        return F(z_trgs[i], y_trg) if z_trgs is not None else E(x_refs[i], y_trg)

    s_trg = style(0)
    x_fake = G(x_real, s_trg, masks=masks)
    loss_adv = losses.adversarial(D(aug(x_fake), y_trg), 1.0)
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
               ema_beta: float, mask_fn: MaskFn | None = None, speed: Speed | None = None
               ) -> dict[str, torch.Tensor]:
    """Run exactly one training iteration on ``batch`` and advance ``state.step`` by one.

    ``batch`` holds x_real, y_org, x_ref, x_ref2, y_trg, z_trg, z_trg2 on the networks' device.
    ``mask_fn`` (w_hpf > 0) gives the face masks of images: those of x_real serve every generator
    call on x_real (computed once: x_real and the mask network do not change within the iteration),
    the cycle reconstruction recomputes them from x_fake.
    ``speed`` sets precision, memory format and shared passes (default: fp32, shared passes).
    Returns the detached loss terms, keyed like ``D/latent_real`` or ``G/ref_cyc``.
    """
    speed = speed or Speed()
    if speed.shared_passes or speed.precision != "fp32" or speed.channels_last or speed.compiled:
        return _shared_train_step(state, batch, loss_cfg, ema_beta, mask_fn, speed)
    return _paper_train_step(state, batch, loss_cfg, ema_beta, mask_fn)


def _paper_train_step(state: TrainState, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
                      ema_beta: float, mask_fn: MaskFn | None) -> dict[str, torch.Tensor]:
    """The five phases as written (fp32, eager): each phase computes everything it needs."""
    nets = state.nets
    x_real, y_org, y_trg = batch["x_real"], batch["y_org"], batch["y_trg"]
    z_trgs = (batch["z_trg"], batch["z_trg2"])
    x_refs = (batch["x_ref"], batch["x_ref2"])
    lambda_ds = losses.lambda_ds_at(state.step, loss_cfg.lambda_ds, loss_cfg.ds_iter)
    masks = mask_fn(x_real) if mask_fn is not None else None
    logs: dict[str, torch.Tensor] = {}

    # 1-2. Discriminator, with latent-guided then reference-guided fakes.
    for mode, kwargs in (("latent", {"z_trg": z_trgs[0]}), ("ref", {"x_ref": x_refs[0]})):
        with record_function(f"phase D/{mode}"):
            d_loss, terms = discriminator_loss(nets, loss_cfg, x_real, y_org, y_trg, masks=masks,
                                               augment=state.augment, **kwargs)
            update(state, d_loss, ("discriminator",))
        logs.update({f"D/{mode}_{k}": v for k, v in terms.items()})

    # 3. Generator, mapping network and style encoder, with latent-guided styles.
    with frozen(nets.discriminator), record_function("phase G/latent"):
        g_loss, terms = generator_loss(nets, loss_cfg, lambda_ds, x_real, y_org, y_trg,
                                       z_trgs=z_trgs, masks=masks, mask_fn=mask_fn, augment=state.augment)
        update(state, g_loss, ("generator", "mapping_network", "style_encoder"))
    logs.update({f"G/latent_{k}": v for k, v in terms.items()})

    # 4. Generator only, with reference-guided styles.
    with (frozen(nets.discriminator, nets.style_encoder, nets.mapping_network),
          record_function("phase G/ref")):
        g_loss, terms = generator_loss(nets, loss_cfg, lambda_ds, x_real, y_org, y_trg,
                                       x_refs=x_refs, masks=masks, mask_fn=mask_fn, augment=state.augment)
        update(state, g_loss, ("generator",))
    logs.update({f"G/ref_{k}": v for k, v in terms.items()})

    return _finish_iteration(state, ema_beta, lambda_ds, logs)


def _shared_train_step(state: TrainState, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
                       ema_beta: float, mask_fn: MaskFn | None, speed: Speed) -> dict[str, torch.Tensor]:
    """The same five phases, computing once what several phases compute with unchanged networks.

    G, F and E change only at the updates of phases 3 and 4, so before phase 3's update:
    - phase 3's first fake G(x_real, F(z_trg)) is computed (with its graph) before phase 1, whose fake
      is the same tensor detached;
    - phase 2's fake G(x_real, E(x_ref)) and phase 3's second fake G(x_real, F(z_trg2)) (L_ds detaches
      it, so it needs no graph) reuse that pass's encoder features of x_real and decode as one batch;
    - phase 3's two style-encoder passes, E(x_fake) and E(x_real), run as one batch.
    In phase 4 the encoder features of x_real serve both fakes, and E's three passes that need no
    gradient (E frozen, inputs without gradient) run as one batch. No layer couples the samples of a
    batch (instance norm and AdaIN are per sample), so batching changes no value; R1 stays on the real
    images only. tests/training/test_step_v2.py checks the result against the naive reference.
    """
    nets = state.nets
    G_encode, G_decode = speed.fn(nets, "generator.encode_image"), speed.fn(nets, "generator.decode_from")
    Fm, E = speed.fn(nets, "mapping_network"), speed.fn(nets, "style_encoder")
    D_fake = speed.fn(nets, "discriminator")  # compiled when asked: no double backward goes through it
    aug = state.augment or _identity  # drawn in the order of the paper's phases: the same transforms
    x_real, x_ref, x_ref2 = (speed.images(batch[k]) for k in ("x_real", "x_ref", "x_ref2"))
    y_org, y_trg, z_trg, z_trg2 = batch["y_org"], batch["y_trg"], batch["z_trg"], batch["z_trg2"]
    lambda_ds = losses.lambda_ds_at(state.step, loss_cfg.lambda_ds, loss_cfg.ds_iter)
    masks = mask_fn(x_real) if mask_fn is not None else None
    masks2 = None if masks is None else tuple(torch.cat([m, m]) for m in masks)
    logs: dict[str, torch.Tensor] = {}

    # Phase 3's first fake, and without gradients phase 2's fake and phase 3's second fake.
    with record_function("phase G/latent"), speed.autocast():
        s_latent = Fm(z_trg, y_trg)
        features = G_encode(x_real, masks)
        x_fake_latent = G_decode(features, s_latent, masks)
        with torch.no_grad():
            s_others = torch.cat([E(x_ref, y_trg), Fm(z_trg2, y_trg)])
            x_fake_ref, x_fake2_latent = G_decode(_repeat(features, 2), s_others, masks2).chunk(2)

    # 1-2. Discriminator, with latent-guided then reference-guided fakes.
    for mode, x_fake in (("latent", x_fake_latent.detach()), ("ref", x_fake_ref)):
        with record_function(f"phase D/{mode}"):
            scaler = speed.scaler(f"D/{mode}")
            d_loss, terms = _discriminator_loss(nets.discriminator, D_fake, loss_cfg, x_real, y_org,
                                                x_fake, y_trg, speed, scaler, state.augment)
            update(state, d_loss, ("discriminator",), scaler=scaler)
        logs.update({f"D/{mode}_{k}": v for k, v in terms.items()})

    # 3. Generator, mapping network and style encoder, with latent-guided styles.
    with frozen(nets.discriminator), record_function("phase G/latent"):
        masks_fake = mask_fn(x_fake_latent.detach().to(x_real.dtype)) if mask_fn is not None else None
        with speed.autocast():
            d_out = D_fake(aug(x_fake_latent), y_trg)
            s_pred, s_org = E(torch.cat([x_fake_latent, x_real.to(x_fake_latent.dtype)]),
                              torch.cat([y_trg, y_org])).chunk(2)
            x_rec = G_decode(G_encode(x_fake_latent, masks_fake), s_org, masks_fake)
        g_loss, terms = _generator_loss(loss_cfg, lambda_ds, d_out, s_pred, s_latent, x_fake_latent,
                                        x_fake2_latent, x_rec, x_real)
        update(state, g_loss, ("generator", "mapping_network", "style_encoder"),
               scaler=speed.scaler("G/latent"))
    logs.update({f"G/latent_{k}": v for k, v in terms.items()})

    # 4. Generator only, with reference-guided styles.
    with (frozen(nets.discriminator, nets.style_encoder, nets.mapping_network),
          record_function("phase G/ref")):
        with speed.autocast():
            with torch.no_grad():
                s_ref, s_ref2, s_org = E(torch.cat([x_ref, x_ref2, x_real]),
                                         torch.cat([y_trg, y_trg, y_org])).chunk(3)
            features = G_encode(x_real, masks)
            x_fake = G_decode(features, s_ref, masks)
            with torch.no_grad():
                x_fake2 = G_decode(features, s_ref2, masks)
        masks_fake = mask_fn(x_fake.detach().to(x_real.dtype)) if mask_fn is not None else None
        with speed.autocast():
            d_out = D_fake(aug(x_fake), y_trg)
            s_pred = E(x_fake, y_trg)
            x_rec = G_decode(G_encode(x_fake, masks_fake), s_org, masks_fake)
        g_loss, terms = _generator_loss(loss_cfg, lambda_ds, d_out, s_pred, s_ref, x_fake, x_fake2,
                                        x_rec, x_real)
        update(state, g_loss, ("generator",), scaler=speed.scaler("G/ref"))
    logs.update({f"G/ref_{k}": v for k, v in terms.items()})

    return _finish_iteration(state, ema_beta, lambda_ds, logs)


def _finish_iteration(state: TrainState, ema_beta: float, lambda_ds: float,
                      logs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # 5. Moving averages used for sampling and evaluation.
    with record_function("phase EMA"):
        update_ema(state.ema, state.nets, ema_beta)
    if state.augment is not None:
        state.augment.after_step(state.world_size)
        logs.update(state.augment.logs())
    state.step += 1
    logs["G/lambda_ds"] = torch.tensor(lambda_ds)
    return logs


def _repeat(features: tuple[torch.Tensor, dict[int, torch.Tensor]], n: int
            ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """G's encoder features of a batch, repeated n times along the batch (for n styles at once)."""
    x, cache = features
    return torch.cat([x] * n), {size: torch.cat([f] * n) for size, f in cache.items()}


def _discriminator_loss(D: nn.Module, D_fake: nn.Module, cfg: LossConfig, x_real: torch.Tensor,
                        y_org: torch.Tensor, x_fake: torch.Tensor, y_trg: torch.Tensor, speed: Speed,
                        scaler: torch.amp.GradScaler | None, augment: DiffAugment | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`discriminator_loss` for a given fake; losses and the R1 gradient in the images' dtype (fp32).

    With loss scaling (fp16), R1 differentiates the scaled output, so that the half-precision
    gradients do not underflow, and divides the penalty by the squared scale.
    """
    aug = augment or _identity
    x_real = x_real.detach().requires_grad_(True)
    x_seen = aug(x_real)  # augmented outside autocast: the transforms run in fp32
    with speed.autocast():
        out = D(x_seen, y_org).to(x_real.dtype)
    if augment is not None:
        augment.observe(out)
    loss_real = losses.adversarial(out, 1.0)
    with record_function("R1"):
        if scaler is None:
            loss_reg = losses.r1_penalty(out, x_real)
        else:
            scale = scaler.scale(torch.ones((), device=out.device))  # a tensor: no host sync
            loss_reg = losses.r1_penalty(out * scale, x_real) / scale**2
    x_fake = aug(x_fake)
    with speed.autocast():
        out_fake = D_fake(x_fake, y_trg).to(x_real.dtype)
    loss_fake = losses.adversarial(out_fake, 0.0)
    loss = loss_real + loss_fake + cfg.lambda_reg * loss_reg
    return loss, {"real": loss_real.detach(), "fake": loss_fake.detach(), "reg": loss_reg.detach()}


def _generator_loss(cfg: LossConfig, lambda_ds: float, d_out: torch.Tensor, s_pred: torch.Tensor,
                    s_trg: torch.Tensor, x_fake: torch.Tensor, x_fake2: torch.Tensor, x_rec: torch.Tensor,
                    x_real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5 from the outputs of :func:`generator_loss`'s passes, reduced in the images' dtype (fp32)."""
    full = x_real.dtype
    loss_adv = losses.adversarial(d_out.to(full), 1.0)
    loss_sty = losses.style_reconstruction(s_pred.to(full), s_trg.to(full))
    loss_ds = losses.diversity_sensitive(x_fake.to(full), x_fake2.to(full))
    loss_cyc = losses.cycle_consistency(x_rec.to(full), x_real)
    loss = loss_adv + cfg.lambda_sty * loss_sty - lambda_ds * loss_ds + cfg.lambda_cyc * loss_cyc
    return loss, {"adv": loss_adv.detach(), "sty": loss_sty.detach(), "ds": loss_ds.detach(),
                  "cyc": loss_cyc.detach()}
